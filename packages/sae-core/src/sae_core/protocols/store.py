"""Activation stores: where cached activations live, and how they are written and read.

The default is the local sharded directory (:mod:`sae_core.stores.local`); other backends (a Hub
dataset, S3 via fsspec) implement the same three classes — :class:`ActivationStore`,
:class:`ActivationWriter` and :class:`~sae_core.protocols.reader.ActivationReader` — and
register under another name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sae_core.errors import StoreError
from sae_core.protocols.batch_plan import TOKEN_FILTERS
from sae_core.protocols.metadata import DTYPES, INDEX_DTYPE, STORE_VERSION, CacheMetadata
from sae_core.protocols.reader import ActivationReader

if TYPE_CHECKING:
    from sae_core.protocols.adapter import ActivationBatch

__all__ = ["DTYPES", "INDEX_DTYPE", "STORE_VERSION", "TOKEN_FILTERS", "ActivationReader", "ActivationStore",
           "ActivationWriter", "CacheMetadata"]


class ActivationWriter(ABC):
    r"""Appends activations in dataset order; crash-safe and resumable.

    ``sae cache`` opens a writer, calls the adapter's ``write_extras(writer.path)``, skips the
    dataset to :attr:`n_done`, :meth:`write`\ s every batch and :meth:`close`\ s. Write files with
    :mod:`sae_core.io` (temporary name, fsync, rename): a crash must leave every recorded row
    intact, and a rerun continues at :attr:`n_done`.
    """

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

    def sync(self) -> None:  # noqa: B027 (optional: empty default)
        """Make every row written so far durable *without* marking the cache complete (a live
        training run that stops before the end of its dataset keeps what it cached; a later
        run continues at :attr:`n_done`). Default: nothing (rows not yet in a finished shard
        are written again by the next run)."""

    @property
    def complete(self) -> bool:
        """Whether what this writer writes (a cache, or one block of it) was already finished
        when it was opened (caching with several ranks skips such blocks). Default: False."""
        return False

    def __enter__(self) -> ActivationWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()


class ActivationStore(ABC):
    """Factory for readers/writers of one storage backend."""

    name: ClassVar[str]

    @abstractmethod
    def open_writer(self, root: str | Path, meta: CacheMetadata, **options: Any) -> ActivationWriter:
        """A writer of the cache of ``meta`` under the store root ``root`` (new, or resumed if
        it exists: same ``meta.fingerprint()``); ``writer.path`` is the cache's address, by
        convention ``root / meta.fingerprint()``. ``options``: ``shard_examples`` and, for
        several ranks, ``block``; ignore what does not apply."""

    @abstractmethod
    def open_reader(self, path: str | Path, **options: Any) -> ActivationReader:
        """A reader of the cache at ``path`` (raise StoreError with the fix if it is not one)."""

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

        raise StoreError(f"store {self.name!r} cannot be written by several ranks; cache with one process")

    def merge_blocks(self, root: str | Path, meta: CacheMetadata) -> Path:
        """Rank 0, after every block writer closed: make the blocks one complete cache."""

        raise StoreError(f"store {self.name!r} cannot be written by several ranks; cache with one process")
