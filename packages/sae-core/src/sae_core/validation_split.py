"""The validation split: a deterministic set of whole dataset examples that training never reads.

Membership is a pure function of the example's dataset id (``Example.id``, stored in every
cache row's index) and the split's seed: a 64-bit hash of the two, mapped to [0, 1), is below the
fraction. So the split does not depend on the cache's size, shard layout, row order, the run's
seed or the number of ranks; all windows of one document fall on the same side (no leakage from
a document's first window into its second); and a cache that grows keeps every example where it
was. Analyses read the same split from the checkpoint's ``cfg.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from sae_core.errors import ConfigError

Side = Literal["train", "val", "all"]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective mix of uint64 words (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class ExampleSplit:
    """``fraction`` of examples (by hash of their id and ``seed``) are validation examples."""

    fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.fraction}; e.g. --val-fraction 0.02")

    @property
    def active(self) -> bool:
        return self.fraction > 0.0

    def is_val(self, example_ids: np.ndarray) -> np.ndarray:
        """Boolean mask, same shape as ``example_ids`` (int64 dataset ids)."""
        ids = np.asarray(example_ids, dtype=np.int64).astype(np.uint64)
        with np.errstate(over="ignore"):
            h = _mix64(ids + np.uint64(self.seed) * np.uint64(0x9E3779B97F4A7C15))
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # uniform in [0, 1)
        return u < self.fraction

    def keep(self, example_ids: np.ndarray, side: Side) -> np.ndarray:
        """Mask of the examples on ``side`` ("all": every example; no split: all train, no val)."""
        if side == "all":
            return np.ones(np.shape(example_ids), dtype=bool)
        val = self.is_val(example_ids) if self.active else np.zeros(np.shape(example_ids), dtype=bool)
        return val if side == "val" else ~val


@dataclass(frozen=True)
class Selection:
    """Which examples a reader yields: one side of a split."""

    split: ExampleSplit
    side: Side = "train"

    def rows(self, example_ids: np.ndarray) -> np.ndarray:
        """Mask over rows given each row's example id."""
        return self.split.keep(example_ids, self.side)
