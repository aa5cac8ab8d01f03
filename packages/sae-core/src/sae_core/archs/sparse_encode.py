"""Pre-activations at chosen latents, with a gradient that costs O(selected), not O(d_sae).

A TopK SAE's loss depends on its pre-activations only at the k selected latents (and, for AuxK,
at the k_aux selected dead ones). Autograd through the dense encoder matmul would still compute
two dense (batch × d_in × d_sae) products in the backward pass — the weight gradient and the
gradient flowing to b_dec — each as costly as the forward. Here the forward is the dense matmul
(needed to choose the latents) under no_grad, and the backward uses only the selected entries:

    pre      = (x − b_dec) W_enc + b_enc                    (n, batch, d_sae), no graph
    v        = pre[..., idx]                                (n, batch, m): what the loss sees
    ∂L/∂W_enc[:, j] = Σ_{(b, s): idx[b,s] = j} g[b,s] (x_b − b_dec)     (a sparse × dense product)
    ∂L/∂b_enc[j]    = Σ_{(b, s): idx[b,s] = j} g[b,s]
    ∂L/∂b_dec       = −W_enc ∂L/∂b_enc

with g = ∂L/∂v. For batch 4096, d_in 768, d_sae 6144 and m = 32 that is ~0.2 GFLOP instead of
~77 GFLOP per SAE, i.e. a TopK training step costs about one dense matmul instead of three.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch


class _GatherPre(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, idx: torch.Tensor, x: torch.Tensor, W_enc: torch.Tensor,
                b_enc: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx, x, W_enc, b_dec)
        return pre.gather(-1, idx)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):
        idx, x, W_enc, b_dec = ctx.saved_tensors
        n, batch, m = idx.shape
        d_in, d_sae = W_enc.shape[1], W_enc.shape[2]
        g = g.to(x.dtype)
        rows = (idx + (torch.arange(n, device=idx.device) * d_sae)[:, None, None]).reshape(-1)  # global latent ids
        cols = torch.arange(batch, device=idx.device).repeat_interleave(m).repeat(n)
        # S[latent, b] = g, one CSR matrix for every SAE of the bank (rows sorted by latent, duplicates
        # allowed: a latent picked by both TopK and AuxK sums); S @ x = Σ_b g·x_b per latent
        order = torch.argsort(rows)
        counts = torch.bincount(rows, minlength=n * d_sae)
        crow = torch.zeros(n * d_sae + 1, dtype=torch.long, device=idx.device)
        crow[1:] = torch.cumsum(counts, 0)
        vals = g.reshape(-1)[order]
        with warnings.catch_warnings():  # "CSR support is in beta": a stable subset is used here
            warnings.simplefilter("ignore", UserWarning)
            S = torch.sparse_csr_tensor(crow, cols[order], vals, (n * d_sae, batch), check_invariants=False)
        gW_t = S @ x  # (n·d_sae, d_in)
        g_benc = torch.zeros(n * d_sae, device=g.device, dtype=g.dtype).index_add_(0, rows[order], vals)
        g_benc = g_benc.view(n, d_sae)
        gW_t = gW_t.view(n, d_sae, d_in) - g_benc[..., None] * b_dec[:, None, :]  # (x − b_dec), not x
        g_bdec = -torch.bmm(W_enc, g_benc[..., None]).squeeze(-1)  # (n, d_in)
        return None, None, None, gW_t.transpose(1, 2).contiguous(), g_benc, g_bdec


def gather_pre_acts(pre: torch.Tensor, idx: torch.Tensor, x: torch.Tensor, W_enc: torch.Tensor,
                    b_enc: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
    """``pre.gather(-1, idx)`` with the sparse gradient above.

    pre: (n, batch, d_sae) computed without a graph from x (batch, d_in), W_enc (n, d_in, d_sae),
    b_enc (n, d_sae), b_dec (n, d_in); idx: (n, batch, m) -> (n, batch, m).
    """
    return _GatherPre.apply(pre, idx, x, W_enc, b_enc, b_dec)
