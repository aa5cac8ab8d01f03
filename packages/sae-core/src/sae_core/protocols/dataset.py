"""Datasets: deterministic, random-access sources of examples (images or texts).

Random access (``dataset[i]``) is required, not just iteration: a resumed ``sae cache`` seeks past
finished shards without re-running the model, and the viewer fetches the image or text of a top
example by its id. Adapters that read a dataset front to back call :meth:`Dataset.iter_from`,
which a dataset streamed from the Hub or from large files overrides to read sequentially.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class Example:
    """One dataset item. ``id`` is its position in the dataset's deterministic order."""

    id: int
    data: Any  # PIL.Image.Image for images, str for text
    label: str | None = None
    source: str | None = None  # file path, URL or document name, for display
    meta: dict[str, Any] = field(default_factory=dict)


class Dataset(ABC):
    """A dataset selected by ``--data NAME:ARG``; ``modality`` is ``"image"`` or ``"text"``."""

    modality: ClassVar[str]

    def __init__(self, spec: str) -> None:
        self.spec = spec
        #: examples that could not be read (corrupt images, undecodable files): skipped, counted
        self.skipped = 0

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Example:
        """The example at ``index``; raise ``IndexError`` past the end."""

    def iter_from(self, start: int = 0) -> Iterator[Example]:
        """Examples ``start, start + 1, ...`` in order, to the end (or the first ``IndexError``).

        The default indexes; a streamed dataset (no cheap random access) overrides it with one
        sequential read that skips ``start`` examples, which is how a resumed cache continues.
        """
        for i in range(start, len(self)):
            try:
                yield self[i]
            except IndexError:
                return

    def describe(self) -> dict[str, Any]:
        """JSON-able description written into cache metadata (spec, size, options)."""
        return {"spec": self.spec, "modality": self.modality, "n_examples": len(self)}

    def fingerprint(self) -> str:
        """Stable hash of what the dataset contains; part of the cache directory's name.

        The default hashes :meth:`describe`; datasets over files should also hash file names and
        sizes so that a changed folder gives a new cache.
        """
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]
