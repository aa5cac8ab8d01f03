"""Activation stores: where cached activations live, and how they are written and read.

The default is the local sharded directory (:mod:`sae_core.stores.local`); other backends (a Hub
dataset, S3 via fsspec) implement the same three classes and register under another name.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from sae_core.protocols.adapter import ActivationBatch
    from sae_core.split import Selection

STORE_VERSION = 1
DTYPES = ("float32", "float16", "bfloat16")

#: One record per stored token: which source example and position it came from.
INDEX_DTYPE = np.dtype(
    [("example", "<i8"), ("position", "<i4"), ("token", "<i4"), ("valid", "u1")]
)


@dataclass
class CacheMetadata:
    """Contents of ``metadata.json``. ``n_examples``/``complete`` are filled when writing ends."""

    adapter: str
    model: str
    layers: list[str]
    d_model: int
    dtype: str
    tokens_per_example: int
    token_kinds: list[str]
    dataset: dict[str, Any]
    layout: str = "fixed"  # fixed windows (+ `valid` mask in the index)
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = STORE_VERSION
    n_examples: int | None = None
    complete: bool = False

    def identity(self) -> dict[str, Any]:
        """The fields that define *what* was cached (not how far writing got)."""
        return {
            "adapter": self.adapter,
            "model": self.model,
            "layers": self.layers,
            "dtype": self.dtype,
            "tokens_per_example": self.tokens_per_example,
            "token_kinds": self.token_kinds,
            "dataset": self.dataset,
            "extra": self.extra,
            "version": self.version,
        }

    def fingerprint(self) -> str:
        """Content address of the cache: the directory name under the store root."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def n_layers(self) -> int:
        return len(self.layers)


class ActivationWriter(ABC):
    """Appends activations in dataset order; crash-safe and resumable."""

    path: Path

    @property
    @abstractmethod
    def n_done(self) -> int:
        """Examples already durably written: a resumed run starts the dataset here."""

    @abstractmethod
    def write(self, batch: ActivationBatch) -> None:
        """Append a batch (its first example id must follow the last written one)."""

    @abstractmethod
    def close(self) -> Path:
        """Flush the last shard and mark the cache complete; returns its directory."""

    def __enter__(self) -> ActivationWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()


class ActivationReader(ABC):
    """Reads a finished (or partially finished) cache."""

    meta: CacheMetadata
    path: Path

    @property
    @abstractmethod
    def n_examples(self) -> int: ...

    @abstractmethod
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
    ) -> Iterator[torch.Tensor]:
        """One epoch of token vectors, ``(batch, len(layers), d_model)`` each.

        ``tokens``: ``all`` | ``cls`` | ``patch`` | ``register`` | ``token``; tokens whose index
        record is not ``valid`` (padding, BOS) are never yielded. Deterministic given
        ``(seed, epoch)``; every selected token appears exactly once per epoch. ``start_batch``
        skips that many batches (exact resume). ``part=(rank, world)``: only rank's share of each
        batch, such that the shares of all ranks, concatenated in rank order, are the batch a
        single reader yields (data-parallel training across ``torchrun`` ranks). ``select``: only
        the rows of one side of a validation split (:mod:`sae_core.split`, by each row's example id).
        """

    @abstractmethod
    def read_examples(
        self, start: int, stop: int, *, layers: list[int] | None = None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Rows ``start:stop`` in order: acts ``(n, n_layers, tokens, d_model)`` and the
        ``INDEX_DTYPE`` records ``(n, tokens)``; for analyses that need example identity."""


class ActivationStore(ABC):
    """Factory for readers/writers of one storage backend."""

    name: ClassVar[str]

    @abstractmethod
    def open_writer(self, root: str | Path, meta: CacheMetadata, **options: Any) -> ActivationWriter: ...

    @abstractmethod
    def open_reader(self, path: str | Path) -> ActivationReader: ...

    @abstractmethod
    def detect(self, path: str | Path) -> bool:
        """Whether ``path`` is a cache of this backend."""

    # -- several ranks writing one cache (torchrun); optional --------------------------------------
    def plan_blocks(
        self, root: str | Path, meta: CacheMetadata, n_examples: int, n_blocks: int
    ) -> list[tuple[int, int]] | None:
        """Rank 0, before any writer: split the examples still to cache into contiguous blocks
        ``[(start, stop), ...]``, fixed at the first launch and read back on relaunch (None: the
        cache is already complete). Writers then open with ``open_writer(..., block=i)``."""
        from sae_core.errors import StoreError

        raise StoreError(f"store {self.name!r} cannot be written by several ranks; cache with one process")

    def merge_blocks(self, root: str | Path, meta: CacheMetadata) -> Path:
        """Rank 0, after every block writer closed: make the blocks one complete cache."""
        from sae_core.errors import StoreError

        raise StoreError(f"store {self.name!r} cannot be written by several ranks; cache with one process")
