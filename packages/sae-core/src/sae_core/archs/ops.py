"""Tensor helpers the architectures' banks share: sparse decoding, the per-SAE MSE.

Public as ``sae_core.sparse_decode`` / ``sae_core.mse_per_sae``: the built-in architectures
import them (and the contract, :class:`~sae_core.Architecture`, :class:`~sae_core.Bank`, ...)
from ``sae_core`` exactly as a plugin does.

Notation used in the architecture docstrings: x ∈ R^d_in, pre = (x − b_dec) W_enc + b_enc,
x̂ = f W_dec + b_dec, SSE = ||x − x̂||².
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sae_core.dataclass_parsing import from_dict


def sparse_decode(idx: torch.Tensor, vals: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """Σ_j vals[..., j] · W_dec[idx[..., j]] for every SAE, without a dense (batch, d_sae) matmul.

    idx, vals: (n, batch, k); W_dec: (n, d_sae, d_in) -> (n, batch, d_in). All SAEs are flattened
    into one embedding_bag call (one kernel); its backward gives W_dec a gradient only on the
    rows used and the values their exact gradient, which is what makes TopK training cheap.
    """
    n, batch, k = idx.shape
    d_sae, d_in = W_dec.shape[1], W_dec.shape[2]
    offsets = (torch.arange(n, device=idx.device) * d_sae)[:, None, None]
    flat_idx = (idx + offsets).reshape(n * batch, k)
    weights = vals.reshape(n * batch, k).to(W_dec.dtype)  # (n * batch, k)
    out = F.embedding_bag(flat_idx, W_dec.reshape(n * d_sae, d_in), per_sample_weights=weights, mode="sum")
    return out.view(n, batch, d_in)


def mse_per_sae(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-token SSE: (n,)."""
    return (recon - x).pow(2).sum(-1).mean(-1)


def make_hyper(cls: type, arch: str, values: dict[str, Any], d_sae: int) -> Any:
    """Build and validate one SAE's hyperparameters (strict: unknown keys are errors).

    The same as ``Architecture.make_hyper``, for callers that hold only the Hyper class."""

    hyper = from_dict(cls, values, where=f"{arch} hyperparameters")
    if hasattr(hyper, "validate"):
        hyper.validate(d_sae)
    return hyper
