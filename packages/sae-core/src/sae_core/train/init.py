"""Data-dependent initialisation: input normalisation scale and the decoder bias."""

from __future__ import annotations

import math

import torch


def norm_scale(x: torch.Tensor) -> float:
    """Scale s with E||s·x|| = sqrt(d_in): makes hyperparameters transfer across models/layers."""
    mean_norm = float(x.norm(dim=-1).mean())
    return math.sqrt(x.shape[-1]) / mean_norm if mean_norm > 0 else 1.0


def geometric_median(x: torch.Tensor, iters: int = 30, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of distances to the rows of x.

    Robust to outlier tokens (e.g. attention sinks with huge norms), unlike the mean, which is
    why it is the usual b_dec init.
    """
    x = x.double()
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=-1).clamp_min(eps)  # (n,)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() < eps * max(1.0, float(y.norm())):
            y = y_new
            break
        y = y_new
    return y.float()
