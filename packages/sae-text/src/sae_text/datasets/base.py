"""Shared piece of the text datasets: a list-backed dataset."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from sae_core.errors import DataError
from sae_core.protocols import Dataset, Example


class TextListDataset(Dataset):
    """Documents held in memory (texts are small next to their activations)."""

    modality: ClassVar[str] = "text"

    def __init__(self, spec: str, texts: list[str], sources: list[str] | None = None, limit: int | str | None = None):
        super().__init__(spec)
        if limit is not None:
            texts = texts[: int(limit)]
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            raise DataError(f"dataset {spec!r} contains no text; check the path and the field name")
        self.texts = texts
        self.sources = sources[: len(texts)] if sources else None
        self.limit = None if limit is None else int(limit)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < len(self.texts):
            raise IndexError(index)
        src = self.sources[index] if self.sources else None
        return Example(id=index, data=self.texts[index], source=src)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "limit": self.limit}

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t in self.texts:
            h.update(hashlib.sha256(t.encode()).digest())
        return h.hexdigest()[:16]
