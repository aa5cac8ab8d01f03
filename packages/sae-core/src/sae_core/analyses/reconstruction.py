"""``reconstruction``: quality of the SAE on held-out data.

Training reads the whole cache, so "held-out" means the last 10% of the cache's rows by default
(``--option heldout_frac=...``); in a shuffled cache they are a fair sample of the same
distribution. Reports FVU (SSE / SSE around the mean), L0 (latents with a non-zero code per
token), dead and dense fractions, mean cosine
similarity between x and x̂, and the relative size of the decoder bias (||b_dec|| / mean ||x||).
Transcoders: every reconstruction number is of their target y (the output layer) predicted from
the input layer's codes — FVU, MSE and cosine of ŷ against y, ||b_dec|| / mean ||y|| — and L0,
dead and dense fractions are of those codes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sae_core import Analysis, AnalysisContext, SAEError, filenames, firing
from sae_core.analyses.common import (
    heldout_rows,
    iter_io_rows,
    rows_per_chunk,
    sae_split,
    save_json,
    selected_mask,
)


class Reconstruction(Analysis):
    """Held-out FVU, L0, dead/dense fractions, cosine similarity, relative bias."""

    name: ClassVar[str] = "reconstruction"
    options: ClassVar[tuple[str, ...]] = ("split", "heldout_frac")

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        rows = heldout_rows(ctx)
        sse = sum_x = sum_x2 = cos = norm = l0 = 0.0
        n = 0
        fired = torch.zeros(ctx.sae.d_sae, device=ctx.device)
        for _, x_in, y, index in iter_io_rows(ctx, rows, rows_per_chunk(ctx)):
            keep = selected_mask(ctx, index)
            x_in, x = x_in[keep], y[keep]  # (m, d_in), and what is reconstructed (m, d_out): x_in itself for SAEs
            if not len(x):
                continue
            with torch.no_grad():
                f = ctx.sae.encode(x_in)
                recon = ctx.sae.decode(f)
            sse += float(((recon - x) ** 2).sum())
            sum_x = sum_x + x.double().sum(0)
            sum_x2 += float((x.double() ** 2).sum())
            cos += float(torch.nn.functional.cosine_similarity(x, recon, dim=-1).sum())
            norm += float(x.norm(dim=-1).sum())
            active = firing(f)  # (m, d_sae): code != 0, whatever its sign
            l0 += float(active.sum())
            fired += active.sum(0)
            n += len(x)
        if n == 0:

            raise SAEError(f"no held-out tokens in the {len(rows)} held-out rows of {ctx.reader.path}; cache more data")
        total_var = sum_x2 - float((sum_x**2).sum()) / n
        result = {
            "split": ctx.options.get("split", "val" if sae_split(ctx) is not None else "tail"),
            "n_rows": len(rows),
            "n_tokens": n,
            "fvu": sse / max(total_var, 1e-12),
            "mse": sse / n,
            "l0": l0 / n,
            "dead_frac": float((fired == 0).float().mean()),
            "dense_frac": float((fired / n > 0.1).float().mean()),
            "cosine": cos / n,
            "relative_bias": float(ctx.sae.b_dec.detach().norm()) / (norm / n),
        }
        if ctx.sae.cfg.is_transcoder:  # the numbers above are of the target, predicted from the input
            result["transcoder"] = {"input": ctx.sae.cfg.source.layer, "target": ctx.sae.cfg.source.layer_out}
        save_json(ctx.checkpoint / filenames.RECONSTRUCTION_FILE, result)
        return result
