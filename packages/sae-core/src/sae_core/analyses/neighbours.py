"""``decoder-neighbours``: per latent, the latents whose decoder directions are closest.

Two latents whose decoder rows point the same way write the same thing into the model (feature
splitting, duplicates, absorption); listing each latent's nearest decoder directions is how one
finds them. Cosine similarity of ``W_dec`` rows ([d_sae, d_in], a transcoder's [d_sae, d_out]),
computed blockwise — ``block`` rows against all d_sae rows, then a top-n per row — so a
65,536-latent SAE needs O(block · d_sae) memory, never the dense d_sae² matrix. Writes
``neighbours.safetensors``: ``indices`` int64 [d_sae, n] (self excluded, best first) and
``cosine`` float32 [d_sae, n]. A latent with an all-zero decoder row has cosine 0 with everything.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sae_core import Analysis, AnalysisContext, filenames
from sae_core.analyses.common import option, save_safetensors

#: cosine entries per block (block · d_sae floats): 2**26 = 256 MB of float32
BLOCK_ENTRIES = 2**26


def default_block(d_sae: int, entries: int = BLOCK_ENTRIES) -> int:
    """Rows per block so that a (block, d_sae) matrix holds about ``entries`` values."""
    return max(1, min(d_sae, entries // max(d_sae, 1)))


def decoder_neighbours(W_dec: torch.Tensor, n: int = 10, *, block: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices int64 (d_sae, n), cosine float32 (d_sae, n)): each row's ``n`` most similar
    other rows of ``W_dec`` (d_sae, d) by cosine, best first, self excluded. ``n`` is clipped to
    d_sae - 1. Works on W_dec's device; memory O(block · d_sae)."""
    d_sae = W_dec.shape[0]
    n = max(0, min(int(n), d_sae - 1))
    block = block or default_block(d_sae)
    unit = W_dec.detach().float()
    unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (d_sae, d)
    indices = torch.empty(d_sae, n, dtype=torch.long, device=W_dec.device)
    cosine = torch.empty(d_sae, n, dtype=torch.float32, device=W_dec.device)
    for lo in range(0, d_sae, block):
        hi = min(lo + block, d_sae)
        sims = unit[lo:hi] @ unit.T  # (b, d_sae)
        rows = torch.arange(hi - lo, device=W_dec.device)
        sims[rows, rows + lo] = -float("inf")  # never one's own neighbour
        cosine[lo:hi], indices[lo:hi] = sims.topk(n, dim=1)  # (b, n)
    return indices, cosine


class DecoderNeighbours(Analysis):
    """Each latent's nearest latents by cosine of their decoder directions (duplicates, splits)."""

    name: ClassVar[str] = "decoder-neighbours"
    options: ClassVar[tuple[str, ...]] = ("neighbours",)

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        n = option(ctx, "neighbours", 10, int, "positive")
        indices, cosine = decoder_neighbours(ctx.sae.W_dec, n)
        save_safetensors(ctx.checkpoint / filenames.NEIGHBOURS_FILE, {"indices": indices.cpu(), "cosine": cosine.cpu()})
        first = cosine[:, 0] if cosine.shape[1] else cosine.new_zeros(0)
        return {"n": int(indices.shape[1]),
                "max_cosine": float(first.max()) if first.numel() else None,
                "latents_with_a_neighbour_above_0.9": int((first > 0.9).sum())}
