"""Which cache rows count as held out, and how many of them an evaluation reads.

Every evaluation that claims to be on held-out data (``reconstruction``, ``downstream``,
``sae ablate``) gets its rows from :func:`heldout_rows`. Today that is the last ``frac`` (10%)
of the cache's rows — training reads the whole cache, so in a shuffled cache they are the best
available sample of the same distribution; pointing this one function at a validation split
changes all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from sae_core.errors import SAEError

if TYPE_CHECKING:
    from sae_core.protocols.store import ActivationReader

DEFAULT_FRAC = 0.1


def heldout_rows(reader: ActivationReader, *, frac: float = DEFAULT_FRAC, limit: int | None = None) -> tuple[int, int]:
    """Rows [start, stop) of ``reader`` that are held out: the last ``frac`` of the first
    ``limit`` rows (all rows if None), at least one."""
    hi = reader.n_examples if limit is None else min(reader.n_examples, limit)
    if hi <= 0:
        raise SAEError(f"cache {reader.path} has no rows; cache some data first")
    return hi - max(1, int(hi * frac)), hi


def last_rows_with(
    reader: ActivationReader, start: int, stop: int, count: Callable[[np.ndarray], np.ndarray], *, tokens: int,
    max_rows: int | None = None, chunk: int = 64,
) -> int:
    """First row of the shortest tail [first, stop) of [start, stop) whose rows hold at least
    ``tokens`` counted tokens (``count(index records (n, T)) -> (n,)`` per row), at most
    ``max_rows`` rows; index records are read from the end backwards."""
    first = stop
    have = 0
    floor = start if max_rows is None else max(start, stop - max_rows)
    while first > floor and have < tokens:
        lo = max(floor, first - chunk)
        index = read_index(reader, lo, first)
        per_row = np.asarray(count(index))  # (rows,)
        need = tokens - have
        cum = np.cumsum(per_row[::-1])  # tokens in the last 1, 2, ... rows of this chunk
        if cum[-1] >= need:
            take = int(np.searchsorted(cum, need)) + 1
            return first - take
        have += int(cum[-1])
        first = lo
    return first


def read_index(reader: ActivationReader, start: int, stop: int) -> np.ndarray:
    """Index records (n, T) of rows [start, stop); the acts of one layer are read alongside by
    readers that have no index-only read."""
    reader_index = getattr(reader, "read_index", None)
    if callable(reader_index):
        return reader_index(start, stop)
    return reader.read_examples(start, stop, layers=[0])[1]
