"""Per-SAE training metrics and their JSONL logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sae_core.errors import CheckpointError
from sae_core.io import append_line, atomic_write_text, fsync_file


def fvu_from_sums(sse: torch.Tensor, sum_x: torch.Tensor, sum_sq: torch.Tensor, n: int) -> torch.Tensor:
    """Fraction of variance unexplained per SAE, SSE / SSE around the batch mean, from sums.

    sse: (n_saes,) Σ||x − x̂||²; sum_x: (d_in,) Σx; sum_sq: () Σ||x||²; n: tokens. Sums (not
    per-token tensors) so data-parallel ranks can add theirs before dividing. Pass float64:
    Σ||x||² − ||Σx||²/n cancels badly in float32 when the mean is large.
    """
    total = sum_sq - sum_x.pow(2).sum() / n
    return sse / total.clamp_min(1e-12)


class MetricsLog:
    """Appends one JSON line per log step to ``<sae dir>/metrics.jsonl``.

    Lines are appended without fsync (a log, not state); :meth:`sync` makes them durable at
    each checkpoint. On resume the file is rewritten durably with only the lines up to the
    resumed step; a partial last line (a crash mid-append) is dropped, a damaged line elsewhere
    is an error naming the file and line.
    """

    def __init__(self, path: Path, *, resume_step: int | None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(path, "")
        elif path.exists():  # drop lines written after the checkpoint we resume from
            kept = [json.dumps(r) for r in read_metrics(path) if r["step"] <= resume_step]
            atomic_write_text(path, "".join(k + "\n" for k in kept))
        self.last: dict[str, Any] = {}

    def write(self, record: dict[str, Any]) -> None:
        self.last = record
        append_line(self.path, json.dumps(record))

    def sync(self) -> None:
        """fsync the lines written so far."""
        if self.path.exists():
            fsync_file(self.path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, tolerating a partial last line (see MetricsLog)."""

    lines = path.read_bytes().split(b"\n")
    records = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                raise ValueError("no step")
        except ValueError:
            if all(not rest.strip() for rest in lines[n:]):
                break  # the last line was cut short by a crash mid-write: it never counted
            raise CheckpointError(
                f"{path} line {n} is damaged; delete that line (or the file, losing the log) and resume again"
            ) from None
        records.append(rec)
    return records
