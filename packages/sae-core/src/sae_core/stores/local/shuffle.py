"""Plan of a shuffled epoch: which contiguous chunks are read, in which order, grouped how.

An epoch reads the cache as contiguous row chunks (large sequential reads, friendly to disks and
the page cache) in a random order; consecutive chunks are grouped into *windows* of about
``buffer_samples`` selected tokens, and each window is fully permuted before it is cut into
batches. Every selected token lands in exactly one window, hence appears once per epoch, and the
whole plan is a pure function of ``(seed, epoch)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chunk:
    start: int  # first global row
    stop: int  # one past the last global row


def plan_chunks(n_rows: int, chunk_rows: int, rng: np.random.Generator | None) -> list[Chunk]:
    """Row chunks covering ``[0, n_rows)``, shuffled when ``rng`` is given."""
    starts = np.arange(0, n_rows, max(1, chunk_rows))
    if rng is not None:
        starts = rng.permutation(starts)
    return [Chunk(int(s), int(min(s + chunk_rows, n_rows))) for s in starts]


def group_windows(chunks: list[Chunk], chunks_per_window: int) -> list[list[Chunk]]:
    k = max(1, chunks_per_window)
    return [chunks[i : i + k] for i in range(0, len(chunks), k)]
