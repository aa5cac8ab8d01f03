"""Reading a cache: the ``ActivationReader`` protocol.

Everything the trainer and the analyses call on a reader is declared here. A store implements
``n_examples`` and ``read_examples`` and inherits the rest; the defaults of the batching methods
live in :mod:`sae_core.stores.batching` (seeded shuffles, the buffer plan, gathers), which a store
for large caches replaces with its own streaming reads (the local store).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sae_core.errors import StoreError
from sae_core.protocols.batch_plan import TOKEN_FILTERS, BatchPlan
from sae_core.protocols.metadata import CacheMetadata
from sae_core.stores import batching
from sae_core.stores.batching import INDEX_ROWS

if TYPE_CHECKING:
    import torch

    from sae_core.validation_split import Selection


class ActivationReader(ABC):
    """Reads a finished (or partially finished) cache.

    A store must implement :attr:`n_examples` and :meth:`read_examples` (and set ``meta`` and
    ``path``); everything the trainer and analyses call has a working default built on those:
    layer and token-kind lookups from ``meta``, :meth:`read_index`, :meth:`n_tokens`, seeded
    :meth:`batches` of a :class:`~sae_core.protocols.batch_plan.BatchPlan` (with ``part`` for
    data-parallel ranks), :meth:`batch_sample_ids`, :meth:`sample_source` and :meth:`verify`.
    The batching defaults (:mod:`sae_core.stores.batching`) hold every sample id of an epoch in
    memory (8 bytes per token) and read rows through :meth:`read_examples`; a store for large
    caches overrides :meth:`batches`, :meth:`batch_sample_ids` and :meth:`read_index` (the local
    store streams chunks). An override must honour every field of the plan, ``mixing`` included
    (it may hand a ``buffer`` plan to ``ActivationReader.batches(self, plan)``).
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

        return batching.sample_ids(self, tokens, select)

    def n_tokens(self, tokens: str = "all", *, select: Selection | None = None) -> int:
        """Number of samples one epoch yields with this filter (valid tokens only)."""
        return len(self.sample_ids(tokens, select=select))

    def rows(self, select: Selection | None = None) -> np.ndarray:
        """Global row numbers (ascending) of the examples ``select`` keeps (None: every row)."""

        return batching.selected_rows(self, select)

    def gather(self, sample_ids: np.ndarray, layers: list[int | str] | None = None) -> torch.Tensor:
        """Samples ``(n, len(layers), d_model)`` (float32) for global sample ids, in their order."""

        return batching.gather(self, sample_ids, layers)

    def batches(self, plan: BatchPlan) -> Iterator[torch.Tensor]:
        """One epoch of token vectors as ``plan`` says, ``(batch, len(plan.layers), d_model)``
        each (``plan.part``: this rank's share of every batch).

        Deterministic given ``(plan.seed, plan.epoch)``; every selected valid token appears
        exactly once per epoch. Row ``i`` of a batch is sample ``batch_sample_ids(plan, b)[i]``
        (a batch's samples in sorted order). Default: :func:`sae_core.stores.batching.batches`.
        """

        return batching.batches(self, plan)

    def batch_sample_ids(self, plan: BatchPlan, batch: int) -> np.ndarray:
        """Sorted global sample ids of batch ``batch`` of the epoch ``plan`` describes (counted from
        the epoch's start, whatever ``plan.start_batch``; the whole batch, whatever ``plan.part``):
        row ``i`` of that batch as :meth:`batches` yields it is sample ``ids[i]`` (to locate bad
        inputs; not the hot path)."""

        return batching.batch_sample_ids(self, plan, batch)

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
        import torch  # lazy: loads torch


        report: dict[str, Any] = {"shards": 0, "damaged": [], "unchecked": [], "nonfinite": {}}
        for lo in range(0, self.n_examples, INDEX_ROWS):
            hi = min(lo + INDEX_ROWS, self.n_examples)
            bad = int((~torch.isfinite(self.read_examples(lo, hi)[0])).sum())
            if bad:
                report["nonfinite"][f"rows {lo}:{hi}"] = bad
        return report
