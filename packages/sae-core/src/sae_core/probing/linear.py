"""A sparse linear probe: L1-regularised logistic regression on all latents, in torch.

One binary probe per label (one-vs-rest), fitted together: minimise over W (n_labels, d), b

    mean_i log(1 + exp(−s_ij (x_i · w_j + b_j))) + λ_j ‖w_j‖₁     (s_ij = ±1; b not penalised)

by FISTA (accelerated proximal gradient: a gradient step on the smooth loss, then soft
thresholding, which sets weights exactly to 0 — the point of an L1 probe) with adaptive restart. The step is 1/L with
L = ‖[X 1]‖²₂ / (4n), the loss's Lipschitz constant (the spectral norm by power iteration). X may
be a sparse COO tensor (SAE codes are sparse; it is multiplied as CSR), so memory is O(nnz).
"""

from __future__ import annotations

import torch


def _mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.sparse.mm(x, w) if x.layout == torch.sparse_coo else x @ w  # dense or CSR


def _prepare(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, Xᵀ) in float64, sparse ones as CSR (several times faster than COO in the products)."""
    if x.is_sparse:
        import warnings

        x = x.double().coalesce()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here work
            warnings.simplefilter("ignore", UserWarning)
            return x.to_sparse_csr(), x.t().coalesce().to_sparse_csr()
    x = x.double()
    return x, x.t()


def spectral_norm_sq(x: torch.Tensor, iters: int = 50, seed: int = 0) -> float:
    """‖X‖²₂ (largest eigenvalue of XᵀX) by power iteration."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x, xt = _prepare(x)
    v = torch.randn(x.shape[1], 1, generator=g, dtype=torch.float64).to(x.device)
    lam = 0.0
    for _ in range(iters):
        u = _mm(xt, _mm(x, v))
        lam = float(u.norm())
        if lam == 0:
            return 0.0
        v = u / lam
    return lam


def lambda_max(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n_labels,) the smallest λ at which every weight is 0: max_k |Xᵀ(y − ȳ)|_k / n."""
    n = x.shape[0]
    _, xt = _prepare(x)
    r = y.double() - y.double().mean(0, keepdim=True)  # (n, n_labels)
    return _mm(xt, r).abs().amax(0) / n


def fit_l1_logistic(x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor | float, *, max_iter: int = 2000,
                    tol: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Weights (n_labels, d), biases (n_labels,) and iterations run, float64.

    ``x`` (n, d) dense or sparse COO, ``y`` (n, n_labels) 0/1, ``lam`` a float or (n_labels,).
    Stops when no weight or bias moved more than ``tol`` × max(1, max |w|) in an iteration, or
    after ``max_iter`` iterations.
    """
    step = 4 * x.shape[0] / max(spectral_norm_sq(x) + x.shape[0], 1e-12)  # 1/L, L = ‖[X 1]‖² / 4n ≤ (‖X‖² + n) / 4n
    x, xt = _prepare(x)
    y = y.double()
    n, d = x.shape
    n_labels = y.shape[1]
    lam_t = torch.as_tensor(lam, dtype=torch.float64, device=x.device).expand(n_labels)
    p0 = y.mean(0).clamp(1e-6, 1 - 1e-6)
    w = torch.zeros(d, n_labels, dtype=torch.float64, device=x.device)  # (d, n_labels)
    b = torch.log(p0 / (1 - p0))  # (n_labels,) the intercept-only optimum
    zw, zb, t = w.clone(), b.clone(), 1.0
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        r = torch.sigmoid(_mm(x, zw) + zb) - y  # (n, n_labels) residuals
        gw, gb = _mm(xt, r) / n, r.mean(0)
        w_new = zw - step * gw
        w_new = w_new.sign() * (w_new.abs() - step * lam_t).clamp_min(0)  # soft threshold
        b_new = zb - step * gb
        moved = max(float((w_new - w).abs().max()), float((b_new - b).abs().max()))
        # adaptive restart (O'Donoghue & Candès): drop the momentum when it points uphill
        if float(((zw - w_new) * (w_new - w)).sum() + ((zb - b_new) * (b_new - b)).sum()) > 0:
            t_new, zw, zb = 1.0, w_new, b_new
        else:
            t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
            zw = w_new + (t - 1) / t_new * (w_new - w)
            zb = b_new + (t - 1) / t_new * (b_new - b)
        w, b, t = w_new, b_new, t_new
        if moved < tol * max(1.0, float(w.abs().max())):
            break
    return w.T.contiguous(), b, n_iter


def predict_proba(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, n_labels) probabilities of a fitted probe (``w`` (n_labels, d))."""
    x, _ = _prepare(x)
    return torch.sigmoid(_mm(x, w.T.double()) + b.double())
