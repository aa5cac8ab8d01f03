"""The ``local`` store backend: a sharded directory on a local or network filesystem."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from sae_core.protocols.store import ActivationStore, CacheMetadata
from sae_core.stores.local import format as fmt
from sae_core.stores.local.parallel import merge_blocks, plan_blocks
from sae_core.stores.local.reader import LocalReader
from sae_core.stores.local.writer import LocalWriter


class LocalStore(ActivationStore):
    """Creates :class:`LocalWriter` / :class:`LocalReader` objects."""

    name: ClassVar[str] = "local"

    def open_writer(self, root: str | Path, meta: CacheMetadata, **options: Any) -> LocalWriter:
        return LocalWriter(root, meta, **options)

    def open_reader(self, path: str | Path, **options: Any) -> LocalReader:
        return LocalReader(path, **options)

    def plan_blocks(
        self, root: str | Path, meta: CacheMetadata, n_examples: int, n_blocks: int
    ) -> list[tuple[int, int]] | None:

        return plan_blocks(root, meta, n_examples, n_blocks)

    def merge_blocks(self, root: str | Path, meta: CacheMetadata) -> Path:

        return merge_blocks(root, meta)

    def detect(self, path: str | Path) -> bool:
        meta = Path(path) / fmt.METADATA
        if not meta.is_file():
            return False
        try:
            return "version" in fmt.read_json(meta, "cache metadata")
        except Exception:
            return False
