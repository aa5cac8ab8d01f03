"""``feature-stats``: firing frequency, mean/max activation and activation histograms per latent.

A latent fires where its code is non-zero, whatever its sign (:mod:`sae_core.codes`); strengths
are magnitudes |code|, so signed architectures are measured like non-negative ones. One streaming
pass; memory is O(d_sae · bins). Writes ``feature_stats.safetensors`` (frequency,
mean_activation (mean |code| over firing tokens), max_activation (max |code|), positive_fraction
(of firings with a positive code; 1 for non-negative codes), act_hist_counts [d_sae, bins] of
log10|code|, act_hist_edges) and ``feature_stats.json`` (n_tokens, mean L0, dead/dense fractions,
log-density histogram: how many latents fire at each log10 frequency, non_negative_codes).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sae_core.analyses.common import (
    analysis_rows,
    encode_tokens,
    iter_rows,
    rows_per_chunk,
    save_json,
    save_safetensors,
    selected_mask,
)
from sae_core.codes import firing, magnitude
from sae_core.layout import FEATURE_STATS_FILE, FEATURE_STATS_SUMMARY_FILE
from sae_core.protocols.analysis import Analysis, AnalysisContext

N_BINS = 40
LOG_MIN, LOG_MAX = -4.0, 4.0  # log10 activation range of the per-latent histograms
DENSE = 0.1


class FeatureStats(Analysis):
    """Firing frequency, mean/max activation and log-activation histograms of every latent."""

    name: ClassVar[str] = "feature-stats"
    options: ClassVar[tuple[str, ...]] = ("split",)

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        d_sae = ctx.sae.d_sae
        dev = ctx.device
        count = torch.zeros(d_sae, device=dev, dtype=torch.float64)
        total = torch.zeros(d_sae, device=dev, dtype=torch.float64)
        positive = torch.zeros(d_sae, device=dev, dtype=torch.float64)
        peak = torch.zeros(d_sae, device=dev)
        hist = torch.zeros(d_sae * N_BINS, device=dev, dtype=torch.int64)
        edges = torch.linspace(LOG_MIN, LOG_MAX, N_BINS + 1, device=dev)
        n_tokens = 0
        for _, x, index in iter_rows(ctx, analysis_rows(ctx), rows_per_chunk(ctx)):
            keep = selected_mask(ctx, index)  # (n, T)
            f = encode_tokens(ctx, x)[keep]  # (m, d_sae) codes
            n_tokens += f.shape[0]
            tok, lat = firing(f).nonzero(as_tuple=True)  # sparse: every statistic reads only the firing entries
            vals = f[tok, lat]  # (nnz,) signed codes
            mag = magnitude(vals)  # (nnz,)
            count += torch.bincount(lat, minlength=d_sae)
            positive += torch.bincount(lat[vals > 0], minlength=d_sae)
            total.index_add_(0, lat, mag.double())
            peak.scatter_reduce_(0, lat, mag.to(peak.dtype), reduce="amax")
            bins = torch.bucketize(mag.log10().clamp(LOG_MIN, LOG_MAX - 1e-6), edges[1:-1])
            hist.index_add_(0, lat * N_BINS + bins, torch.ones_like(bins))
        freq = (count / max(n_tokens, 1)).float()
        mean = (total / count.clamp_min(1)).float()
        save_safetensors(ctx.checkpoint / FEATURE_STATS_FILE, {
            "frequency": freq,
            "mean_activation": mean,
            "max_activation": peak,
            "positive_fraction": (positive / count.clamp_min(1)).float(),
            "act_hist_counts": hist.view(d_sae, N_BINS).int(),
            "act_hist_edges": edges,
        })
        log_freq = freq.clamp_min(1e-10).log10()
        lf_edges = torch.linspace(-10, 0, 41, device=dev)
        lf_counts = torch.histc(log_freq, bins=40, min=-10, max=0)
        summary = {
            "n_tokens": n_tokens,
            "dead_frac": float((count == 0).float().mean()),
            "dense_frac": float((freq > DENSE).float().mean()),
            "mean_l0": float(count.sum() / max(n_tokens, 1)),
            "non_negative_codes": bool(getattr(ctx.sae, "non_negative_codes", True)),
            "log_freq_hist": {"edges": lf_edges.tolist(), "counts": lf_counts.int().tolist()},
        }
        save_json(ctx.checkpoint / FEATURE_STATS_SUMMARY_FILE, summary)
        return {k: v for k, v in summary.items() if k != "log_freq_hist"}
