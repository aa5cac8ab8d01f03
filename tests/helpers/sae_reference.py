"""Plain single-SAE references for the six architectures, written from the papers' equations.

Nothing here imports ``sae_core``: each SAE is a dict of ordinary tensors, the loss is written out
term by term in the papers' notation, straight-through estimators are written as surrogate terms
(value 0, chosen derivative) rather than autograd Functions, and training uses
``torch.optim.Adam``. The tests drive a bank and this reference on the same batches and compare
loss, the gradient of every parameter and the parameters after every step.

Conventions shared with the bank (they are part of the method, not of the code):
pre = (x − b_dec) W_enc + b_enc; x̂ = f W_dec + b_dec; losses are means over tokens of per-token
sums; decoder rows unit-norm with the radial gradient removed for topk/batchtopk/jumprelu/
matryoshka/gated (Gao et al.; Bricken et al.; Rajamanoharan et al.), free for relu (its penalty
weights by ||W_dec,i||, Anthropic 2024).

Transcoders (Dunefsky et al., 2024; SAELens's ``Transcoder``): the same losses with a separate
target y reconstructed from the input x. b_dec is in y's space and never touches x; x is centred
by a fixed input bias b_in (a constant, not a parameter: pre = (x − b_in) W_enc + b_enc), and
ŷ = f W_dec + b_dec; every reconstruction term (MSE, AuxK's residual e = y − ŷ, Matryoshka's
prefixes, Gated's frozen-decoder term) is against y, and k_aux defaults to half of y's width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

UNIT_NORM = {"topk", "batchtopk", "jumprelu", "matryoshka", "gated"}


def _sse(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    return ((x - recon) ** 2).sum(-1).mean()


def _topk_code(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Gao et al.: keep the k largest pre-activations of each token, ReLU them, zero the rest."""
    v, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, v.relu())


def _auxk(p: dict[str, torch.Tensor], pre: torch.Tensor, x: torch.Tensor, recon: torch.Tensor,
          dead: torch.Tensor | None, aux_k: int, coeff: float) -> torch.Tensor:
    """Gao et al. AuxK: ê = TopK_kaux(pre over dead latents) W_dec; α ||e − ê||², e = x − x̂ (no grad)."""
    if dead is None or not bool(dead.any()):
        return pre.new_zeros(())
    k_aux = min(aux_k, int(dead.sum()))
    masked = pre.masked_fill(~dead, float("-inf"))
    v, idx = masked.topk(k_aux, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, idx, v.relu())
    e_hat = z @ p["W_dec"]
    e = (x - recon).detach()
    return coeff * ((e - e_hat) ** 2).sum(-1).mean()


@dataclass
class RefSAE:
    arch: str
    hyper: dict[str, Any]
    d_in: int
    params: dict[str, torch.Tensor]
    threshold_ema: float | None = None  # batchtopk: running θ
    log: dict[str, float] = field(default_factory=dict)
    b_in: torch.Tensor | None = None  # set: a transcoder, x centred by this constant, a separate target y

    @classmethod
    def from_tensors(cls, arch: str, hyper: dict[str, Any], tensors: dict[str, torch.Tensor],
                     b_in: torch.Tensor | None = None) -> RefSAE:
        params = {k: v.detach().clone().double().requires_grad_(True) for k, v in tensors.items()}
        centre = None if b_in is None else b_in.detach().clone().double()
        return cls(arch=arch, hyper=dict(hyper), d_in=params["W_enc"].shape[0], params=params, b_in=centre)

    def loss(self, x: torch.Tensor, dead: torch.Tensor | None, sparsity_scale: float = 1.0,
             target: torch.Tensor | None = None) -> torch.Tensor:
        """The architecture's training loss on batch x (B, d_in); dead: (d_sae,) bool; ``target``
        (B, d_out): what a transcoder reconstructs (SAEs reconstruct x)."""
        p, h = self.params, self.hyper
        x = x.double()
        if self.b_in is not None:
            assert target is not None, "a transcoder's loss needs its target"
            y, x_enc = target.double(), x - self.b_in  # b_dec is in y's space: the input has its own centre
        else:
            assert target is None
            y, x_enc = x, x - p["b_dec"]
        pre = x_enc @ p["W_enc"] + p["b_enc"]
        x = y  # from here on, x is what is reconstructed
        d_out = y.shape[-1]
        if self.arch == "relu":  # Anthropic (2024): L1 weighted by decoder norms, no norm constraint
            f = pre.relu()
            recon = f @ p["W_dec"] + p["b_dec"]
            l1 = (f * p["W_dec"].norm(dim=1)).sum(-1).mean()
            return _sse(x, recon) + h["l1_coeff"] * sparsity_scale * l1
        if self.arch == "topk":
            f = _topk_code(pre, h["k"])
            recon = f @ p["W_dec"] + p["b_dec"]
            aux_k = h.get("aux_k") or d_out // 2
            return _sse(x, recon) + _auxk(p, pre, x, recon, dead, aux_k, h.get("aux_coeff", 1 / 32))
        if self.arch in ("batchtopk", "matryoshka"):
            k = h["k"]
            if self.arch == "matryoshka" and h["base"] == "topk":
                f = _topk_code(pre, k)
            else:  # Bussmann et al. (2024): top k·B activations of the whole batch
                a = pre.relu()
                tau = a.detach().flatten().topk(k * x.shape[0]).values[-1]
                f = a * (a >= tau) * (a > 0)
                m = h.get("threshold_momentum", 0.99)
                self.threshold_ema = float(tau) if self.threshold_ema is None else m * self.threshold_ema + (1 - m) * float(tau)
            recon = f @ p["W_dec"] + p["b_dec"]
            aux_k = h.get("aux_k") or d_out // 2
            aux = _auxk(p, pre, x, recon, dead, aux_k, h.get("aux_coeff", 1 / 32))
            if self.arch == "batchtopk":
                return _sse(x, recon) + aux
            prefixes = h["prefixes"]  # Bussmann et al. (2025): every prefix must reconstruct x
            nested = torch.stack([_sse(x, f[:, :m] @ p["W_dec"][:m] + p["b_dec"]) for m in prefixes]).mean()
            return nested + aux
        if self.arch == "jumprelu":  # Rajamanoharan et al. (2024b)
            theta, eps = p["threshold"], h["bandwidth"]
            on = (pre > theta).to(pre.dtype)
            kern = (((pre - theta) / eps).abs() < 0.5).to(pre.dtype)  # K((pre − θ)/ε)
            f = _with_theta_grad(pre * on.detach(), theta, -(theta / eps) * kern)  # ∂f/∂θ := −(θ/ε)K
            recon = f @ p["W_dec"] + p["b_dec"]
            tok_l0 = _with_theta_grad(on, theta, -(1.0 / eps) * kern).sum(-1)  # ∂H/∂θ := −(1/ε)K; none to pre
            target = h.get("target_l0")  # set: quadratic (2/T)(L0 − T)² of the batch's mean L0
            penalty = tok_l0.mean() if target is None else 2.0 / target * (tok_l0.mean() - target) ** 2
            return _sse(x, recon) + h.get("l0_coeff", 1.0) * sparsity_scale * penalty
        if self.arch == "gated":  # Rajamanoharan et al. (2024a)
            pi_gate = x_enc @ p["W_enc"] + p["b_enc"]
            pi_mag = x_enc @ (p["W_enc"] * p["r_mag"].exp()) + p["b_mag"]
            f = (pi_gate > 0).to(pre.dtype) * pi_mag.relu()
            recon = f @ p["W_dec"] + p["b_dec"]
            gate_relu = pi_gate.relu()
            l1 = (gate_relu * p["W_dec"].norm(dim=1)).sum(-1).mean()
            recon_aux = gate_relu @ p["W_dec"].detach() + p["b_dec"].detach()  # frozen decoder copy
            return _sse(x, recon) + h["l1_coeff"] * sparsity_scale * l1 + _sse(x, recon_aux)
        raise ValueError(self.arch)


def _with_theta_grad(value: torch.Tensor, theta: torch.Tensor, d_dtheta: torch.Tensor) -> torch.Tensor:
    """``value`` unchanged, plus a zero-valued term θ·c − (θ·c)|detached whose derivative w.r.t.
    θ is c = ``d_dtheta`` (taken as a constant): the straight-through pseudo-derivative."""
    c = d_dtheta.detach()
    return value + theta * c - (theta * c).detach()


class RefTrainer:
    """Adam (torch.optim.Adam) on a RefSAE with the decoder constraint of its architecture."""

    def __init__(self, sae: RefSAE, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 grad_clip: float = 0.0) -> None:
        self.sae = sae
        #: gradient-norm clipping before Adam (0: none): SAELens's SAETrainer clips every step with
        #: torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0) (sae_lens/training/sae_trainer.py)
        self.grad_clip = grad_clip
        self.opt = torch.optim.Adam(list(sae.params.values()), lr=lr, betas=betas, eps=1e-8)

    def step(self, x: torch.Tensor, dead: torch.Tensor | None, sparsity_scale: float = 1.0,
             lr: float | None = None, target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step; returns the loss and each parameter's gradient as applied (after projection)."""
        sae = self.sae
        for t in sae.params.values():
            t.grad = None
        loss = sae.loss(x, dead, sparsity_scale, target=target)
        loss.backward()
        W = sae.params["W_dec"]
        if sae.arch in UNIT_NORM:  # remove the radial component of each decoder row's gradient
            with torch.no_grad():
                W.grad -= (W.grad * W).sum(-1, keepdim=True) * W
        if self.grad_clip > 0:  # of the gradient Adam gets (after the projection)
            torch.nn.utils.clip_grad_norm_(list(sae.params.values()), self.grad_clip)
        grads = {k: v.grad.detach().clone() for k, v in sae.params.items() if v.grad is not None}
        if lr is not None:
            for g in self.opt.param_groups:
                g["lr"] = lr
        self.opt.step()
        with torch.no_grad():
            if sae.arch in UNIT_NORM:
                W /= W.norm(dim=-1, keepdim=True)
            if sae.arch == "jumprelu":
                sae.params["threshold"].clamp_(min=0.0)
        return loss.detach(), grads
