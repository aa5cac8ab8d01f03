"""``feature-stats``: firing frequency, mean/max activation and activation histograms per latent.

A latent fires where its code is non-zero, whatever its sign (:mod:`sae_core.firing_rule`); strengths
are magnitudes |code|, so signed architectures are measured like non-negative ones. One streaming
pass; memory is O(d_sae · bins). Writes ``feature_stats.safetensors`` (frequency,
mean_activation (mean |code| over firing tokens), max_activation (max |code|), positive_fraction
(of firings with a positive code; 1 for non-negative codes), act_hist_counts [d_sae, bins] of
log10|code|, act_hist_edges) and ``feature_stats.json`` (split, n_rows, n_tokens, mean L0,
dead/dense fractions, log-density histogram: how many latents fire at each log10 frequency,
non_negative_codes). Runs inside the shared pass (:mod:`sae_core.analyses.shared_pass`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sae_core import AnalysisContext, CodeChunk, CodeConsumer, PassAnalysis, filenames, magnitude
from sae_core.analyses.common import descriptive_side, save_json, save_safetensors
from sae_core.analyses.shared_pass import bincount

N_BINS = 40
LOG_MIN, LOG_MAX = -4.0, 4.0  # log10 activation range of the per-latent histograms
DENSE = 0.1


class FeatureStats(PassAnalysis):
    """Firing frequency, mean/max activation and log-activation histograms of every latent."""

    name: ClassVar[str] = "feature-stats"
    options: ClassVar[tuple[str, ...]] = ("split", "max_tokens")

    def consumer(self, ctx: AnalysisContext) -> CodeConsumer:
        return FeatureStatsConsumer(ctx)


class FeatureStatsConsumer:
    """Running per-latent sums over the sparse firings of the shared pass."""

    def __init__(self, ctx: AnalysisContext) -> None:
        d_sae, dev = ctx.sae.d_sae, ctx.device
        self.ctx = ctx
        self.signed = not getattr(ctx.sae, "non_negative_codes", True)
        self.total = torch.zeros(d_sae, device=dev, dtype=torch.float64)  # sum of |code| over firings
        self.positive = torch.zeros(d_sae, device=dev, dtype=torch.int64)  # firings with code > 0 (signed codes)
        self.peak = torch.zeros(d_sae, device=dev)
        self.hist = torch.zeros(d_sae * N_BINS, device=dev, dtype=torch.int64)  # every firing lands in one bin
        self.edges = torch.linspace(LOG_MIN, LOG_MAX, N_BINS + 1, device=dev)
        self.n_tokens = self.n_rows = 0

    def update(self, chunk: CodeChunk) -> None:
        d_sae = self.ctx.sae.d_sae
        self.n_tokens += chunk.n_tokens
        self.n_rows += len(chunk.rows)
        lat, vals = chunk.latent, chunk.value  # (nnz,): every statistic reads only the firing entries
        mag = magnitude(vals) if self.signed else vals  # (nnz,)
        if self.signed:
            self.positive += bincount(lat[vals > 0], minlength=d_sae)
        part = torch.zeros(d_sae, device=mag.device, dtype=mag.dtype).index_add_(0, lat, mag)  # one chunk: float32 is exact enough
        self.total += part.double()
        self.peak.scatter_reduce_(0, lat, mag.to(self.peak.dtype), reduce="amax")
        bins = torch.bucketize(mag.log10().clamp_(LOG_MIN, LOG_MAX - 1e-6), self.edges[1:-1])
        self.hist += bincount(lat * N_BINS + bins, minlength=d_sae * N_BINS)

    def finish(self) -> dict[str, Any]:
        ctx, d_sae = self.ctx, self.ctx.sae.d_sae
        hist = self.hist.view(d_sae, N_BINS)
        count = hist.sum(1).double()  # firings per latent (each firing is in exactly one bin)
        positive = self.positive.double() if self.signed else count
        freq = (count / max(self.n_tokens, 1)).float()
        mean = (self.total / count.clamp_min(1)).float()
        save_safetensors(ctx.checkpoint / filenames.FEATURE_STATS_FILE, {
            "frequency": freq,
            "mean_activation": mean,
            "max_activation": self.peak,
            "positive_fraction": (positive / count.clamp_min(1)).float(),
            "act_hist_counts": hist.int(),
            "act_hist_edges": self.edges,
        })
        log_freq = freq.clamp_min(1e-10).log10()
        lf_edges = torch.linspace(-10, 0, 41, device=ctx.device)
        lf_counts = torch.histc(log_freq, bins=40, min=-10, max=0)
        summary = {
            "split": descriptive_side(ctx),
            "n_rows": self.n_rows,
            "n_tokens": self.n_tokens,
            "dead_frac": float((count == 0).float().mean()),  # never fired on the analysed tokens
            "dense_frac": float((freq > DENSE).float().mean()),
            "mean_l0": float(count.sum() / max(self.n_tokens, 1)),  # firings per analysed token
            "non_negative_codes": bool(getattr(ctx.sae, "non_negative_codes", True)),
            "log_freq_hist": {"edges": lf_edges.tolist(), "counts": lf_counts.int().tolist()},
        }
        save_json(ctx.checkpoint / filenames.FEATURE_STATS_SUMMARY_FILE, summary)
        return {k: v for k, v in summary.items() if k != "log_freq_hist"}
