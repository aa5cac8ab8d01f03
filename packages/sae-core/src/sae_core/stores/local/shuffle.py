"""Plan of a shuffled epoch: which contiguous chunks are read, in which order, grouped how.

An epoch visits the cache as contiguous row chunks (each inside one shard file) in a random
order; consecutive chunks are grouped into *windows* of about ``buffer_bytes`` of selected tokens,
and the sample ids of each window are permuted and cut into batches (the last partial batch of a
window carries over into the next). Every selected token lands in exactly one window, hence appears once per epoch, and the
whole plan is a pure function of ``(seed, epoch)``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    start: int  # first global row
    stop: int  # one past the last global row


def group_windows(chunks: list[Chunk], chunks_per_window: int) -> list[list[Chunk]]:
    k = max(1, chunks_per_window)
    return [chunks[i : i + k] for i in range(0, len(chunks), k)]
