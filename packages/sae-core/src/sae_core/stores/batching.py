"""The default batching of a reader: sample ids, seeded shuffles, the buffer plan, gathers.

:class:`~sae_core.protocols.reader.ActivationReader`'s defaults call these functions, built on a
store's ``read_index`` and ``read_examples`` only; the local store reuses the buffer plan
(:func:`buffer_windows`, :func:`buffer_batches`) and the live source drives :class:`BufferMixer`
itself, which is what makes a live run's batches equal to those of a cached run of the same plan.

A sample id is ``row * tokens_per_example + position`` (rows counted from the cache's start).
The defaults hold every sample id of an epoch in memory (8 bytes per token).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from sae_core.errors import StoreError
from sae_core.protocols.batch_plan import BatchPlan, Mixing

if TYPE_CHECKING:
    import torch

    from sae_core.protocols.reader import ActivationReader
    from sae_core.validation_split import Selection

#: rows per read_index/read_examples call of the default implementations
INDEX_ROWS = 4096


class BufferMixer:
    """The state of one epoch of the ``buffer`` plan (:class:`Mixing`): the carried remainder.

    ``add(w, ids)`` takes window ``w``'s sample ids (in dataset order) and returns the *pool*
    (the carried ids, then ``ids``) and the batches cut from it, each as positions into the
    pool; the remainder's positions are in :attr:`carry_positions` and its ids become the head
    of the next pool. Cached readers and the live source both drive this one class, which is
    what makes their batches equal.
    """

    def __init__(self, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True,
                 carry: np.ndarray | None = None) -> None:
        self.batch_size, self.seed, self.epoch, self.shuffle = batch_size, seed, epoch, shuffle
        self.carry = np.empty(0, np.int64) if carry is None else np.asarray(carry, np.int64)
        self.carry_positions = np.empty(0, np.int64)

    def add(self, w: int, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        pool = np.concatenate([self.carry, np.asarray(ids, np.int64)])
        n = len(pool)
        order = np.random.default_rng([self.seed, self.epoch, w]).permutation(n) if self.shuffle else np.arange(n)
        full = n - n % self.batch_size
        batches = [order[lo : lo + self.batch_size] for lo in range(0, full, self.batch_size)]
        self.carry_positions = order[full:]
        self.carry = pool[self.carry_positions]
        return pool, batches


def buffer_batches(windows: Iterable[tuple[int, np.ndarray]], plan: BatchPlan) -> Iterator[np.ndarray]:
    """The sample ids of every batch of the ``buffer`` plan over ``windows`` (``(w, ids)`` in
    window order, empty windows left out)."""
    mixer = BufferMixer(plan.batch_size, seed=plan.seed, epoch=plan.epoch, shuffle=plan.shuffle)
    for w, ids in windows:
        pool, batches = mixer.add(w, ids)
        for b in batches:
            yield pool[b]
    if len(mixer.carry) and not plan.drop_last:
        yield mixer.carry


def check_readable(reader: ActivationReader) -> None:
    """A one-line StoreError for a cache without a finished row (nothing to batch)."""
    if reader.n_examples == 0:
        raise StoreError(f"cache {reader.path} holds no finished shards; run (or finish) `sae cache` first")


# -- sample ids from the index ----------------------------------------------------------------------
def sample_ids(reader: ActivationReader, tokens: str = "all", select: Selection | None = None) -> np.ndarray:
    """Sorted global ids of every sample the ``tokens`` filter selects: valid tokens of that
    kind, of the examples ``select`` keeps (None: all)."""
    positions, t = reader.positions(tokens), reader.meta.tokens_per_example
    parts = [np.empty(0, np.int64)]
    for lo in range(0, reader.n_examples, INDEX_ROWS):
        index = reader.read_index(lo, min(lo + INDEX_ROWS, reader.n_examples))
        valid = index["valid"][:, positions].astype(bool)  # (rows, P)
        if select is not None and select.side != "all":
            valid &= select.rows(index["example"][:, 0])[:, None]  # whole examples in or out
        rows, pos = np.nonzero(valid)  # (m,), (m,)
        parts.append((rows + lo).astype(np.int64) * t + positions[pos])
    return np.concatenate(parts)


def selected_rows(reader: ActivationReader, select: Selection | None = None) -> np.ndarray:
    """Global row numbers (ascending) of the examples ``select`` keeps (None: every row)."""
    if select is None or select.side == "all":
        return np.arange(reader.n_examples, dtype=np.int64)
    parts = [np.empty(0, np.int64)]
    for lo in range(0, reader.n_examples, INDEX_ROWS):
        index = reader.read_index(lo, min(lo + INDEX_ROWS, reader.n_examples))
        parts.append(np.flatnonzero(select.rows(index["example"][:, 0])).astype(np.int64) + lo)
    return np.concatenate(parts)


def buffer_windows(reader: ActivationReader, window_examples: int, tokens: str = "all",
                   select: Selection | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(w, ids)`` of every window of the ``buffer`` plan (:class:`Mixing`) that holds a
    selected sample: ``ids`` are the global sample ids of the rows of examples
    ``[w * window_examples, (w + 1) * window_examples)``, in row order. Reads the index only."""
    positions, t = reader.positions(tokens), reader.meta.tokens_per_example
    current, parts, last_example = -1, [], -1
    for lo in range(0, reader.n_examples, INDEX_ROWS):
        index = reader.read_index(lo, min(lo + INDEX_ROWS, reader.n_examples))
        ex = index["example"][:, 0].astype(np.int64)
        if len(ex) and (ex[0] < last_example or (np.diff(ex) < 0).any()):
            raise StoreError(f"cache {reader.path} is not in dataset order (example ids decrease), which the "
                             "buffer mixing needs; use --mixing shuffle")
        last_example = int(ex[-1]) if len(ex) else last_example
        valid = index["valid"][:, positions].astype(bool)  # (rows, P)
        if select is not None and select.side != "all":
            valid &= select.rows(ex)[:, None]
        rows, pos = np.nonzero(valid)
        ids = (rows + lo).astype(np.int64) * t + positions[pos]
        win = ex[rows] // window_examples
        for w in np.unique(win):  # ascending, since example ids are
            if w != current:
                if parts:
                    yield current, np.concatenate(parts)
                current, parts = int(w), []
            parts.append(ids[win == w])
    if parts:
        yield current, np.concatenate(parts)


# -- the plan ---------------------------------------------------------------------------------------
def epoch_batch_ids(reader: ActivationReader, plan: BatchPlan) -> Iterator[np.ndarray]:
    """The sample ids of every batch of one epoch, in order (``plan.start_batch`` not applied):
    a permutation seeded by ``(seed, epoch)`` of :func:`sample_ids`, cut into batches, or the
    ``buffer`` plan when ``plan.mixing`` asks for it."""
    if plan.buffered:
        yield from buffer_batches(buffer_windows(reader, plan.mixing.window_examples, plan.tokens, plan.select), plan)
        return
    ids = reader.sample_ids(plan.tokens, select=plan.select)
    if plan.shuffle:
        ids = ids[np.random.default_rng([plan.seed, plan.epoch]).permutation(len(ids))]
    full = len(ids) - len(ids) % plan.batch_size
    for lo in range(0, full, plan.batch_size):
        yield ids[lo : lo + plan.batch_size]
    if not plan.drop_last and full < len(ids):
        yield ids[full:]


def gather(reader: ActivationReader, ids: np.ndarray, layers: Iterable[int | str] | None = None) -> torch.Tensor:
    """Samples ``(n, len(layers), d_model)`` (float32) for global sample ids, in their order;
    reads each run of consecutive rows with one ``read_examples`` call."""
    import torch  # lazy: loads torch

    layer_ids = list(range(reader.meta.n_layers)) if layers is None else [reader.layer_index(x) for x in layers]
    t = reader.meta.tokens_per_example
    rows = np.asarray(ids, dtype=np.int64) // t
    out = torch.empty((len(rows), len(layer_ids), reader.meta.d_model), dtype=torch.float32)
    uniq = np.unique(rows)
    runs = np.split(uniq, np.flatnonzero(np.diff(uniq) != 1) + 1) if len(uniq) else []
    for run in runs:
        acts, _ = reader.read_examples(int(run[0]), int(run[-1]) + 1, layers=layer_ids)  # (m, L, T, d)
        sel = np.flatnonzero((rows >= run[0]) & (rows <= run[-1]))
        local = np.asarray(ids)[sel] - int(run[0]) * t
        out[torch.from_numpy(sel)] = acts[torch.from_numpy(local // t), :, torch.from_numpy(local % t)].float()
    return out


def batches(reader: ActivationReader, plan: BatchPlan) -> Iterator[torch.Tensor]:
    """One epoch of ``(batch, len(layers), d_model)`` tensors (see ``ActivationReader.batches``)."""
    check_readable(reader)
    rank, world = plan.part
    for i, ids in enumerate(epoch_batch_ids(reader, plan)):
        if i < plan.start_batch:
            continue
        ids = np.sort(ids)
        if world > 1:
            ids = np.array_split(ids, world)[rank]
        x = reader.gather(ids, plan.layers)
        yield x.to(device=plan.device, dtype=plan.dtype or x.dtype)


def batch_sample_ids(reader: ActivationReader, plan: BatchPlan, batch: int) -> np.ndarray:
    """Sorted global sample ids of batch ``batch`` of the epoch (counted from its start)."""
    for i, ids in enumerate(epoch_batch_ids(reader, plan)):
        if i == batch:
            return np.sort(ids)
    raise StoreError(f"epoch {plan.epoch} of cache {reader.path} has no batch {batch} of size {plan.batch_size}")


# -- a reader read in another order -----------------------------------------------------------------
class MixedReader:
    """``reader`` with its epochs in the order ``mixing`` (:class:`Mixing`) says: every plan it
    is given is read with that mixing; every other attribute is the reader's own."""

    def __init__(self, reader: ActivationReader, mixing: Mixing) -> None:
        self.inner, self.mixing = reader, mixing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def batches(self, plan: BatchPlan) -> Iterator[torch.Tensor]:
        return self.inner.batches(dataclasses.replace(plan, mixing=self.mixing))

    def batch_sample_ids(self, plan: BatchPlan, batch: int) -> np.ndarray:
        return self.inner.batch_sample_ids(dataclasses.replace(plan, mixing=self.mixing), batch)

    def n_tokens(self, tokens: str = "all", *, select: Selection | None = None) -> int:
        import inspect

        if "mixing" in inspect.signature(self.inner.n_tokens).parameters:  # a live source's windows
            return self.inner.n_tokens(tokens, select=select, mixing=self.mixing)
        return self.inner.n_tokens(tokens, select=select)


def with_mixing(reader: Any, mixing: Mixing | None) -> Any:
    """``reader`` reading epochs in the order of ``mixing`` (unchanged for the store's own
    shuffle)."""
    if mixing is None or not mixing.buffered:
        return reader
    return MixedReader(reader, mixing)
