"""``sign-balance`` — an analysis: how often each latent fires with a negative code."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from sae_core import Analysis, AnalysisContext


class SignBalance(Analysis):
    """Share of firings with a negative code, overall and per latent (``sign_balance.json``)."""

    name: ClassVar[str] = "sign-balance"

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        neg = torch.zeros(ctx.sae.d_sae)
        pos = torch.zeros(ctx.sae.d_sae)
        for _, x, index in ctx.iter_rows():  # x: (n, T, d_in) of the SAE's layer, analysed rows
            f = ctx.encode(x[ctx.selected_mask(index)])  # (m, d_sae): its tokens' codes
            neg += (f < 0).sum(0).cpu()
            pos += (f > 0).sum(0).cpu()
        fired = neg + pos
        result = {
            "negative_fraction": float(neg.sum() / fired.sum().clamp_min(1)),
            "latents_firing_both_ways": int(((neg > 0) & (pos > 0)).sum()),
            "per_latent_negative_fraction": (neg / fired.clamp_min(1)).tolist(),
        }
        ctx.write_json("sign_balance.json", result)
        return {k: v for k, v in result.items() if k != "per_latent_negative_fraction"}
