"""Resolve ``--data NAME:ARG`` specs to dataset plugins.

Dataset names are unique per modality (``image/hf`` and ``text/hf`` coexist), so resolution needs
the modality of the adapter that will consume the examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sae_core.errors import DataError
from sae_core.protocols.dataset import Dataset


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"folder:/a/b"`` -> ``("folder", "/a/b")``; ``"samples"`` -> ``("samples", None)``."""
    if not spec or not spec.strip():
        raise DataError("empty --data spec; use NAME:ARG, e.g. folder:/path/to/images or text:corpus.txt")
    name, sep, arg = spec.partition(":")
    return name.strip(), (arg if sep else None)


def open_dataset(spec: str, modality: str, **options: Any) -> Dataset:
    """Build the dataset described by ``spec`` for ``modality`` ("image" | "text").

    ``options`` (split, field, limit, seed and ``--data-opt`` keys) are passed to the factory,
    which rejects the ones it does not understand. ``None`` values are dropped.
    """
    from sae_core.plugins import get_component  # lazy: loads pluggy

    name, arg = parse_spec(spec)
    component = get_component("dataset", name, modality=modality)
    kwargs = {k: v for k, v in options.items() if v is not None}
    dataset = component.build(arg, **kwargs)
    if not isinstance(dataset, Dataset):
        raise DataError(f"dataset plugin {component.plugin!r} returned {type(dataset).__name__}, not a Dataset")
    return dataset


def check_options(name: str, options: dict[str, Any], allowed: set[str]) -> None:
    """Reject dataset options the dataset does not understand, naming the valid ones."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DataError(f"{name} dataset: unknown option(s) {unknown}; valid: {', '.join(sorted(allowed)) or 'none'}")


class DatasetHead(Dataset):
    """The first ``stop`` examples of ``inner``: a rank caching block [start, stop) runs its
    adapter on this from ``start``, since adapters iterate ``dataset[start:]`` to the end."""

    def __init__(self, inner: Dataset, stop: int) -> None:  # no super().__init__: skipped is the inner's
        self.inner, self.stop = inner, min(stop, len(inner))
        self.spec = inner.spec
        self.modality = inner.modality  # type: ignore[misc]

    @property
    def skipped(self) -> int:  # type: ignore[override]
        return self.inner.skipped

    @skipped.setter
    def skipped(self, value: int) -> None:
        self.inner.skipped = value

    def __len__(self) -> int:
        return self.stop

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.stop:
            raise IndexError(index)
        return self.inner[index]

    def iter_from(self, start: int = 0) -> Iterator[Any]:
        for _, example in zip(range(start, self.stop), self.inner.iter_from(start), strict=False):
            yield example

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def fingerprint(self) -> str:
        return self.inner.fingerprint()
