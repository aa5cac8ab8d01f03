"""Reading a cache: the ``ActivationReader`` protocol and its default implementations.

Everything the trainer and the analyses call on a reader is declared here; a store implements
``n_examples`` and ``read_examples`` and inherits the rest (see the class docstring).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sae_core.protocols.metadata import CacheMetadata

if TYPE_CHECKING:
    import torch

    from sae_core.validation_split import Selection


@dataclass(frozen=True)
class Mixing:
    """How one epoch's samples are ordered into batches.

    ``shuffle`` (the default): the store's own plan, a seeded shuffle of the whole cache (the
    local store: shuffled chunks in windows of about 256 MiB). ``buffer``: the plan a live source
    (a model running beside the trainer, :mod:`sae_core.train.live`) can follow, so that a live run
    and a run on the cache it wrote see the same batches: the dataset's examples are cut into
    consecutive *windows* of ``window_examples`` examples (window ``w`` holds the rows of
    examples ``[w * E, (w + 1) * E)``, in dataset order); each window's selected samples, after
    the previous window's remainder, are permuted by ``default_rng([seed, epoch, w])`` and cut
    into batches, and what does not fill a batch is carried into the next window (dropped at the
    end of the epoch). Windows without samples are skipped. See :class:`BufferMixer`.
    """

    kind: str = "shuffle"  # "shuffle" | "buffer"
    window_examples: int = 0  # buffer: examples per window

    def __post_init__(self) -> None:
        from sae_core.errors import ConfigError

        if self.kind not in MIXINGS:
            raise ConfigError(f"mixing must be one of {', '.join(MIXINGS)}, got {self.kind!r}")
        if self.kind == "buffer" and self.window_examples < 1:
            raise ConfigError(f"buffer mixing needs window_examples >= 1, got {self.window_examples}")

    @property
    def buffered(self) -> bool:
        return self.kind == "buffer"


MIXINGS = ("shuffle", "buffer")


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


def buffer_batches(windows: Iterable[tuple[int, np.ndarray]], batch_size: int, *, seed: int, epoch: int,
                   shuffle: bool = True, drop_last: bool = True) -> Iterator[np.ndarray]:
    """The sample ids of every batch of the ``buffer`` plan over ``windows`` (``(w, ids)`` in
    window order, empty windows left out)."""
    mixer = BufferMixer(batch_size, seed=seed, epoch=epoch, shuffle=shuffle)
    for w, ids in windows:
        pool, batches = mixer.add(w, ids)
        for b in batches:
            yield pool[b]
    if len(mixer.carry) and not drop_last:
        yield mixer.carry


class ActivationReader(ABC):
    """Reads a finished (or partially finished) cache.

    A store must implement :attr:`n_examples` and :meth:`read_examples` (and set ``meta`` and
    ``path``); everything the trainer and analyses call has a working default built on those:
    layer and token-kind lookups from ``meta``, :meth:`read_index`, :meth:`n_tokens`, shuffled
    seeded :meth:`batches` (with ``part`` for data-parallel ranks), :meth:`batch_sample_ids`,
    :meth:`sample_source` and :meth:`verify`. The defaults hold every sample id of an epoch in
    memory (8 bytes per token) and read rows through :meth:`read_examples`; a store for large
    caches overrides :meth:`batches` and :meth:`read_index` (the local store streams chunks).
    """

    meta: CacheMetadata
    path: Path

    # -- required ---------------------------------------------------------------------------------
    @property
    @abstractmethod
    def n_examples(self) -> int:
        """Rows written durably (images or text windows)."""

    @abstractmethod
    def read_examples(
        self, start: int, stop: int, *, layers: list[int] | None = None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Rows ``start:stop`` in order: acts ``(n, n_layers, tokens, d_model)`` (float32) and the
        ``INDEX_DTYPE`` records ``(n, tokens)``; for analyses that need example identity.
        ``layers``: indices into ``meta.layers`` (None: all)."""

    # -- description (from meta) ------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        return self.meta.d_model

    def layer_index(self, layer: int | str) -> int:
        """Index into the cache's layers of ``layer`` (an int, negative allowed, or a name)."""
        from sae_core.errors import StoreError

        names = self.meta.layers
        if isinstance(layer, str) and layer in names:
            return names.index(layer)
        try:
            i = int(layer)
        except (TypeError, ValueError):
            raise StoreError(
                f"layer {layer!r} is not in cache {self.path}; its layers are {names} (or indices 0..{len(names) - 1})"
            ) from None
        if not -len(names) <= i < len(names):
            raise StoreError(
                f"layer index {i} is out of range for cache {self.path}, which holds {len(names)} layer(s): {names}"
            )
        return i % len(names)

    def positions(self, tokens: str = "all") -> np.ndarray:
        """Token positions selected by the ``tokens`` filter (``all`` or a token kind)."""
        from sae_core.errors import StoreError

        if tokens not in TOKEN_FILTERS:
            raise StoreError(f"unknown token filter {tokens!r}; use one of {', '.join(TOKEN_FILTERS)}")
        kinds = self.meta.token_kinds
        pos = np.array([i for i, k in enumerate(kinds) if tokens == "all" or k == tokens], dtype=np.int64)
        if len(pos) == 0:
            raise StoreError(f"cache {self.path} has no {tokens!r} tokens; its token kinds are {sorted(set(kinds))}")
        return pos

    # -- reading (defaults built on read_examples) ------------------------------------------------
    def read_index(self, start: int, stop: int) -> np.ndarray:
        """The ``INDEX_DTYPE`` records ``(n, tokens)`` of rows ``start:stop``. Default: through
        :meth:`read_examples` (reads the activations too; override where that is costly)."""
        return self.read_examples(start, stop, layers=[0])[1]

    def sample_ids(self, tokens: str = "all", *, select: Selection | None = None) -> np.ndarray:
        """Sorted global ids (``row * tokens_per_example + position``) of every sample the
        ``tokens`` filter selects: valid tokens of that kind, of the examples ``select`` keeps
        (one side of a validation split, :mod:`sae_core.validation_split`; None: all)."""
        positions, t = self.positions(tokens), self.meta.tokens_per_example
        parts = [np.empty(0, np.int64)]
        for lo in range(0, self.n_examples, _INDEX_ROWS):
            index = self.read_index(lo, min(lo + _INDEX_ROWS, self.n_examples))
            valid = index["valid"][:, positions].astype(bool)  # (rows, P)
            if select is not None and select.side != "all":
                valid &= select.rows(index["example"][:, 0])[:, None]  # whole examples in or out
            rows, pos = np.nonzero(valid)  # (m,), (m,)
            parts.append((rows + lo).astype(np.int64) * t + positions[pos])
        return np.concatenate(parts)

    def n_tokens(self, tokens: str = "all", *, select: Selection | None = None) -> int:
        """Number of samples one epoch yields with this filter (valid tokens only)."""
        return len(self.sample_ids(tokens, select=select))

    def rows(self, select: Selection | None = None) -> np.ndarray:
        """Global row numbers (ascending) of the examples ``select`` keeps (None: every row)."""
        if select is None or select.side == "all":
            return np.arange(self.n_examples, dtype=np.int64)
        parts = [np.empty(0, np.int64)]
        for lo in range(0, self.n_examples, _INDEX_ROWS):
            index = self.read_index(lo, min(lo + _INDEX_ROWS, self.n_examples))
            parts.append(np.flatnonzero(select.rows(index["example"][:, 0])).astype(np.int64) + lo)
        return np.concatenate(parts)

    def buffer_windows(self, window_examples: int, tokens: str = "all", *,
                       select: Selection | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(w, ids)`` of every window of the ``buffer`` plan (:class:`Mixing`) that holds a
        selected sample: ``ids`` are the global sample ids of the rows of examples
        ``[w * window_examples, (w + 1) * window_examples)``, in row order. Reads the index only."""
        from sae_core.errors import StoreError

        positions, t = self.positions(tokens), self.meta.tokens_per_example
        current, parts, last_example = -1, [], -1
        for lo in range(0, self.n_examples, _INDEX_ROWS):
            index = self.read_index(lo, min(lo + _INDEX_ROWS, self.n_examples))
            ex = index["example"][:, 0].astype(np.int64)
            if len(ex) and (ex[0] < last_example or (np.diff(ex) < 0).any()):
                raise StoreError(f"cache {self.path} is not in dataset order (example ids decrease), which the "
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

    def batch_plan(self, batch_size: int, *, tokens: str = "all", seed: int = 0, epoch: int = 0,
                   shuffle: bool = True, drop_last: bool = True,
                   select: Selection | None = None, mixing: Mixing | None = None) -> Iterator[np.ndarray]:
        """The sample ids of every batch of one epoch, in order: a permutation seeded by
        ``(seed, epoch)`` of :meth:`sample_ids`, cut into batches (the default plan), or the
        ``buffer`` plan when ``mixing`` asks for it."""
        if mixing is not None and mixing.buffered:
            yield from buffer_batches(self.buffer_windows(mixing.window_examples, tokens, select=select), batch_size,
                                      seed=seed, epoch=epoch, shuffle=shuffle, drop_last=drop_last)
            return
        ids = self.sample_ids(tokens, select=select)
        if shuffle:
            ids = ids[np.random.default_rng([seed, epoch]).permutation(len(ids))]
        full = len(ids) - len(ids) % batch_size
        for lo in range(0, full, batch_size):
            yield ids[lo : lo + batch_size]
        if not drop_last and full < len(ids):
            yield ids[full:]

    def gather(self, sample_ids: np.ndarray, layers: list[int] | None = None) -> torch.Tensor:
        """Samples ``(n, len(layers), d_model)`` (float32) for global sample ids, in their order;
        reads each run of consecutive rows with one :meth:`read_examples` call."""
        import torch

        layer_ids = list(range(self.meta.n_layers)) if layers is None else [self.layer_index(x) for x in layers]
        t = self.meta.tokens_per_example
        rows = np.asarray(sample_ids, dtype=np.int64) // t
        out = torch.empty((len(rows), len(layer_ids), self.meta.d_model), dtype=torch.float32)
        uniq = np.unique(rows)
        runs = np.split(uniq, np.flatnonzero(np.diff(uniq) != 1) + 1) if len(uniq) else []
        for run in runs:
            acts, _ = self.read_examples(int(run[0]), int(run[-1]) + 1, layers=layer_ids)  # (m, L, T, d)
            sel = np.flatnonzero((rows >= run[0]) & (rows <= run[-1]))
            local = np.asarray(sample_ids)[sel] - int(run[0]) * t
            out[torch.from_numpy(sel)] = acts[torch.from_numpy(local // t), :, torch.from_numpy(local % t)].float()
        return out

    def batches(
        self,
        batch_size: int,
        *,
        layers: list[int] | None = None,
        tokens: str = "all",
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        drop_last: bool = True,
        start_batch: int = 0,
        part: tuple[int, int] = (0, 1),
        select: Selection | None = None,
        mixing: Mixing | None = None,
    ) -> Iterator[torch.Tensor]:
        """One epoch of token vectors, ``(batch, len(layers), d_model)`` each.

        ``tokens``: ``all`` | ``cls`` | ``patch`` | ``register`` | ``token``; tokens whose index
        record is not ``valid`` (padding, BOS) are never yielded. Deterministic given
        ``(seed, epoch)``; every selected token appears exactly once per epoch. Row ``i`` of a
        batch is sample ``batch_sample_ids(...)[i]`` (a batch's samples in sorted order).
        ``start_batch`` skips that many batches (exact resume). ``part=(rank, world)``: only
        rank's share of each batch, such that the shares of all ranks, concatenated in rank
        order, are the batch a single reader yields (data-parallel training across ranks).
        ``select``: only the examples of one side of a validation split (:mod:`sae_core.validation_split`,
        by each row's example id): training reads ``train``, evaluation ``val``.
        ``mixing``: the order of the epoch (:class:`Mixing`; None: the store's own shuffle).
        """
        rank, world = check_batching(self, batch_size, part)
        for i, ids in enumerate(self.batch_plan(batch_size, tokens=tokens, seed=seed, epoch=epoch, shuffle=shuffle,
                                                drop_last=drop_last, select=select, mixing=mixing)):
            if i < start_batch:
                continue
            ids = np.sort(ids)
            if world > 1:
                ids = np.array_split(ids, world)[rank]
            x = self.gather(ids, layers)
            yield x.to(device=device, dtype=dtype or x.dtype)

    def batch_sample_ids(
        self, batch_size: int, *, layers: list[int] | None = None, tokens: str = "all", seed: int = 0,
        epoch: int = 0, batch: int = 0, shuffle: bool = True, select: Selection | None = None,
        mixing: Mixing | None = None,
    ) -> np.ndarray:
        """Sorted global sample ids of batch ``batch`` of an epoch: row ``i`` of that batch as
        :meth:`batches` yields it is sample ``ids[i]`` (to locate bad inputs; not the hot path)."""
        from sae_core.errors import StoreError

        for i, ids in enumerate(self.batch_plan(batch_size, tokens=tokens, seed=seed, epoch=epoch, shuffle=shuffle,
                                                select=select, mixing=mixing)):
            if i == batch:
                return np.sort(ids)
        raise StoreError(f"epoch {epoch} of cache {self.path} has no batch {batch} of size {batch_size}")

    def sample_source(self, sample_id: int) -> dict[str, Any]:
        """Where a sample comes from: ``row``, dataset ``example``, token ``position`` and the
        store's ``shard`` (a file name, or None where the store has no such notion)."""
        row, pos = divmod(int(sample_id), self.meta.tokens_per_example)
        rec = self.read_index(row, row + 1)[0, pos]
        return {"shard": None, "row": row, "example": int(rec["example"]), "position": int(rec["position"])}

    def verify(self, progress: bool = False) -> dict[str, Any]:
        """Read the whole cache: ``damaged`` (files failing their checksums), ``unchecked`` (files
        without one) and ``nonfinite`` (NaN/Inf count per shard). Default: no checksums; every row
        is read through :meth:`read_examples` and non-finite values are counted per row range."""
        import torch

        report: dict[str, Any] = {"shards": 0, "damaged": [], "unchecked": [], "nonfinite": {}}
        for lo in range(0, self.n_examples, _INDEX_ROWS):
            hi = min(lo + _INDEX_ROWS, self.n_examples)
            bad = int((~torch.isfinite(self.read_examples(lo, hi)[0])).sum())
            if bad:
                report["nonfinite"][f"rows {lo}:{hi}"] = bad
        return report


class MixedReader:
    """``reader`` with its epochs in the order ``mixing`` (:class:`Mixing`) says; every other
    attribute is the reader's own. A reader whose ``batches`` does not take ``mixing`` (a plugin
    store that overrides it) is read through the protocol's default implementation."""

    def __init__(self, reader: ActivationReader, mixing: Mixing) -> None:
        self.inner, self.mixing = reader, mixing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        import inspect

        kwargs = {**kwargs, "mixing": self.mixing}
        bound = getattr(self.inner, method)
        if "mixing" in inspect.signature(bound).parameters:
            return bound(*args, **kwargs)
        return getattr(ActivationReader, method)(self.inner, *args, **kwargs)

    def batches(self, *args: Any, **kwargs: Any) -> Iterator[torch.Tensor]:
        return self._call("batches", args, kwargs)

    def batch_sample_ids(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self._call("batch_sample_ids", args, kwargs)

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


#: rows per read_index/read_examples call of the default implementations
_INDEX_ROWS = 4096
TOKEN_FILTERS = ("all", "cls", "patch", "register", "token")


def check_batching(reader: ActivationReader, batch_size: int, part: tuple[int, int]) -> tuple[int, int]:
    """Validate ``batches`` arguments; returns ``(rank, world)``. One-line StoreErrors."""
    from sae_core.errors import StoreError

    if batch_size < 1:
        raise StoreError(f"batch size must be >= 1, got {batch_size}")
    rank, world = part
    if not 0 <= rank < world:
        raise StoreError(f"part {part} is not (rank, world) with 0 <= rank < world")
    if world > 1 and batch_size % world:
        raise StoreError(f"batch size {batch_size} does not split evenly over {world} ranks; use a multiple of {world}")
    if reader.n_examples == 0:
        raise StoreError(f"cache {reader.path} holds no finished shards; run (or finish) `sae cache` first")
    return rank, world
