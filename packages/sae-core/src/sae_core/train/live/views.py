"""Dataset views the live source hands its adapter: one sequential read, and a subset.

The live source runs the adapter once per window of examples (``iter_batches(head, start=lo)``
on the first ``hi`` examples), which is what makes a window's activations a function of the
window alone. Adapters read text front to back through ``Dataset.iter_from``, which a streamed
dataset implements by reading from the start and skipping: :class:`SequentialView` keeps one
iterator open across windows, so consecutive windows cost one pass over the stream in total.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from sae_core.protocols.dataset import Dataset, Example

#: a jump forward of at most this many examples is read through rather than reopened
SKIP_READ = 10_000


class SequentialView(Dataset):
    """``inner`` with ``iter_from(start)`` continuing the previous read when it can."""

    def __init__(self, inner: Dataset) -> None:  # no super().__init__: skipped is the inner's
        self.inner = inner
        self.spec = inner.spec
        self.modality = inner.modality  # type: ignore[misc]
        self._it: Iterator[Example] | None = None
        self._pos = -1

    @property
    def skipped(self) -> int:  # type: ignore[override]
        return self.inner.skipped

    @skipped.setter
    def skipped(self, value: int) -> None:
        self.inner.skipped = value

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> Example:
        return self.inner[index]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers get a copy without the open read
        return {**self.__dict__, "_it": None, "_pos": -1}

    def iter_from(self, start: int = 0) -> Iterator[Example]:
        if self._it is None or not 0 <= start - self._pos <= SKIP_READ:
            self._it, self._pos = iter(self.inner.iter_from(start)), start
        while True:
            try:
                ex = next(self._it)
            except StopIteration:
                self._it = None
                return
            self._pos = int(ex.id) + 1
            if ex.id < start:  # reading through to start
                continue
            yield ex

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def fingerprint(self) -> str:
        return self.inner.fingerprint()


class SubsetView(Dataset):
    """The examples ``ids`` (ascending) of ``inner``, renumbered 0, 1, ...: an adapter run on it
    reports rows of example ``j``, which is ``inner``'s example ``ids[j]``."""

    def __init__(self, inner: Dataset, ids: np.ndarray) -> None:
        self.inner, self.ids = inner, np.asarray(ids, dtype=np.int64)
        self.spec = inner.spec
        self.modality = inner.modality  # type: ignore[misc]

    @property
    def skipped(self) -> int:  # type: ignore[override]
        return self.inner.skipped

    @skipped.setter
    def skipped(self, value: int) -> None:
        self.inner.skipped = value

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < len(self.ids):
            raise IndexError(index)
        return dataclasses.replace(self.inner[int(self.ids[index])], id=index)

    def iter_from(self, start: int = 0) -> Iterator[Example]:
        if start >= len(self.ids):
            return
        j = start
        for ex in self.inner.iter_from(int(self.ids[start])):
            while j < len(self.ids) and self.ids[j] < ex.id:  # unreadable: the inner skipped it
                j += 1
            if j >= len(self.ids):
                return
            if ex.id == self.ids[j]:
                yield dataclasses.replace(ex, id=j)
                j += 1
                if j >= len(self.ids):
                    return

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def fingerprint(self) -> str:
        return self.inner.fingerprint()
