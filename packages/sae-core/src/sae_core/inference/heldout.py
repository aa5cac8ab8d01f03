"""Which cache rows count as held out, and how many of them an evaluation reads.

Every evaluation that claims to be on held-out data (``reconstruction``, ``downstream``,
``sae ablate``) gets its rows from :func:`select_rows`, as ascending row numbers:

- ``val`` (the default for SAEs trained with a validation split, ``cfg.json`` ``val``): the rows
  of the validation examples (:mod:`sae_core.validation_split`), whole examples training never read;
- ``tail`` (the default for SAEs trained without one: older runs, ``--val-fraction 0``): the
  last ``frac`` (10%) of the cache's rows, at least one — training read them too, but in a
  shuffled cache they are a sample of the same distribution;
- ``all``: every row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from sae_core.errors import SAEError
from sae_core.validation_split import ExampleSplit, Selection

if TYPE_CHECKING:
    from sae_core.checkpoint.cfg import SAECheckpointConfig
    from sae_core.protocols.store import ActivationReader
    from sae_core.validation_split import ExampleSplit

DEFAULT_FRAC = 0.1
SIDES = ("val", "all", "tail")


def sae_split(cfg: SAECheckpointConfig) -> ExampleSplit | None:
    """The validation split an SAE was trained with (its cfg.json ``val``), or None."""

    val = cfg.val
    return ExampleSplit(float(val.fraction), int(val.seed)) if val.fraction > 0 else None


def default_side(split: ExampleSplit | None) -> str:
    """``val`` for SAEs with a validation split, else ``tail``."""
    return "val" if split is not None else "tail"


def select_rows(
    reader: ActivationReader, split: ExampleSplit | None, side: str | None = None, *, frac: float = DEFAULT_FRAC,
    what: str = "this SAE", flag: str = "--option split=",
) -> np.ndarray:
    """Ascending row numbers of ``reader`` on ``side`` (val, all, tail; default
    :func:`default_side`); a side with no rows is a one-line error naming ``flag``."""
    side = side or default_side(split)
    arg = flag if flag.endswith("=") else f"{flag} "  # "--option split=tail", "--split tail"
    if side not in SIDES:
        raise SAEError(f"{flag} must be val, all or tail, got {side!r}")
    n = reader.n_examples
    if side == "val":
        if split is None:
            raise SAEError(f"{what} was trained without a validation split; use {arg}tail or all")

        rows = np.asarray(reader.rows(Selection(split, "val")), dtype=np.int64)
    elif side == "tail":
        rows = np.arange(max(0, n - max(1, int(n * frac))), n, dtype=np.int64)
    else:
        rows = np.arange(n, dtype=np.int64)
    if not len(rows):
        raise SAEError(f"no {side} rows to read in cache {reader.path}; cache more data, or pick another {flag} "
                       "(val, all, tail)")
    return rows


def last_rows_with(
    reader: ActivationReader, rows: np.ndarray, count: Callable[[np.ndarray], np.ndarray], *, tokens: int,
    max_rows: int | None = None, chunk: int = 64,
) -> np.ndarray:
    """The shortest tail of ``rows`` (ascending row numbers) whose rows hold at least ``tokens``
    counted tokens (``count(index records (n, T)) -> (n,)`` per row), at most ``max_rows`` rows
    (all of ``rows`` if they hold fewer); index records are read from the end backwards."""
    rows = np.asarray(rows, dtype=np.int64)
    first = len(rows)
    have = 0
    floor = 0 if max_rows is None else max(0, len(rows) - max_rows)
    while first > floor and have < tokens:
        lo = max(floor, first - chunk)
        per_row = np.asarray(count(read_index(reader, rows[lo:first])))  # (first - lo,)
        need = tokens - have
        cum = np.cumsum(per_row[::-1])  # tokens in the last 1, 2, ... rows of this chunk
        if cum[-1] >= need:
            take = int(np.searchsorted(cum, need)) + 1
            return rows[first - take :]
        have += int(cum[-1])
        first = lo
    return rows[first:]


def runs(rows: np.ndarray) -> list[np.ndarray]:
    """Ascending ``rows`` cut into runs of consecutive row numbers (each read at once)."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return []
    return np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)


def read_index(reader: ActivationReader, rows: np.ndarray) -> np.ndarray:
    """Index records (n, T) of ascending ``rows`` (``ActivationReader.read_index`` per run of
    consecutive rows)."""
    parts = [reader.read_index(int(run[0]), int(run[-1]) + 1) for run in runs(rows)]
    if not parts:
        raise SAEError(f"no rows to read in cache {reader.path}")
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def rows_span(rows: np.ndarray) -> list[int]:
    """``[first, last + 1]`` of ascending ``rows`` (what result files record with ``n_rows``)."""
    return [int(rows[0]), int(rows[-1]) + 1]
