"""Per-SAE training metrics and their JSONL logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def fvu(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained per SAE: SSE / SSE around the batch mean.

    x: (batch, d_in) or (n, batch, d_in); recon: (n, batch, d_in) -> (n,)
    """
    x = x if x.dim() == 3 else x.unsqueeze(0)
    sse = (recon - x).pow(2).sum(dim=(-1, -2))
    total = (x - x.mean(dim=-2, keepdim=True)).pow(2).sum(dim=(-1, -2))
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
