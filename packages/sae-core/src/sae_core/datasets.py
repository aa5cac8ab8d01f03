"""Resolve ``--data NAME:ARG`` specs to dataset plugins.

Dataset names are unique per modality (``image/hf`` and ``text/hf`` coexist), so resolution needs
the modality of the adapter that will consume the examples.
"""

from __future__ import annotations

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
    from sae_core.plugins import get_component

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
