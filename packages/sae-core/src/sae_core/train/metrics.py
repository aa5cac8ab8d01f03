"""Per-SAE training metrics and their JSONL logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def fvu_from_sums(sse: torch.Tensor, sum_x: torch.Tensor, sum_sq: torch.Tensor, n: int) -> torch.Tensor:
    """Fraction of variance unexplained per SAE, SSE / SSE around the batch mean, from sums.

    sse: (n_saes,) Σ||x − x̂||²; sum_x: (d_in,) Σx; sum_sq: () Σ||x||²; n: tokens. Sums (not
    per-token tensors) so data-parallel ranks can add theirs before dividing. Pass float64:
    Σ||x||² − ||Σx||²/n cancels badly in float32 when the mean is large.
    """
    total = sum_sq - sum_x.pow(2).sum() / n
    return sse / total.clamp_min(1e-12)


class MetricsLog:
    """Appends one JSON line per log step to ``<sae dir>/metrics.jsonl``."""

    def __init__(self, path: Path, *, resume_step: int | None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        elif path.exists():  # drop lines written after the checkpoint we resume from
            kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
            path.write_text("".join(k + "\n" for k in kept))
        self.last: dict[str, Any] = {}

    def write(self, record: dict[str, Any]) -> None:
        self.last = record
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
