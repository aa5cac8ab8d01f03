"""Activation stores shipped with sae-core, and backend-independent open functions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae_core.errors import StoreError
from sae_core.plugin_calls import guarded, returned

if TYPE_CHECKING:  # the CLI imports this package (its plugin modules) to start: keep numpy out
    from sae_core.protocols.store import ActivationReader, ActivationWriter, CacheMetadata


def open_writer(root: str | Path, meta: CacheMetadata, *, store: str = "local", **options: Any) -> ActivationWriter:
    """A writer for a new or partially written cache of ``meta`` under ``root``."""
    from sae_core.plugins import get_component  # lazy: loads pluggy
    from sae_core.protocols.store import ActivationWriter  # lazy: loads numpy

    with guarded("store", store, "open_writer", "an ActivationWriter for the cache of meta under root"):
        writer = get_component("store", store).build().open_writer(root, meta, **options)
    return returned(writer, ActivationWriter, "store", store, "open_writer", "an ActivationWriter")


def open_reader(path: str | Path, *, store: str | None = None, **options: Any) -> ActivationReader:
    """A reader for the cache at ``path``; the backend is detected unless ``store`` is given."""
    from sae_core.plugins import get_component, get_registry  # lazy: loads pluggy

    if store is not None:
        return _open_reader(get_component("store", store).build(), store, path, options)
    p = Path(path)
    if not p.exists():
        raise StoreError(f"cache {p} does not exist; create it with `sae cache` or pass the path it printed")

    for component in get_registry().all("store"):
        backend = component.build()
        with guarded("store", component.name, "detect(path)", "True or False: is this path one of its caches"):
            found = backend.detect(p)
        if found:
            return _open_reader(backend, component.name, p, options)
    hint = ""
    if p.is_dir():
        subs = [c.name for c in p.iterdir() if (c / "metadata.json").is_file()]
        if subs:
            hint = f" (it is a store root; pass one of its caches: {', '.join(str(p / s) for s in subs[:5])})"
    raise StoreError(f"{p} is not an activation cache: no metadata.json{hint}")


def _open_reader(backend: Any, name: str, path: str | Path, options: dict[str, Any]) -> ActivationReader:
    """``backend.open_reader``, guarded: a store plugin's bug is one line naming it."""
    from sae_core.protocols.store import ActivationReader  # lazy: loads numpy

    with guarded("store", name, "open_reader", "an ActivationReader of the cache at path"):
        reader = backend.open_reader(path, **options)
    return returned(reader, ActivationReader, "store", name, "open_reader", "an ActivationReader")


def check_complete(reader: ActivationReader, *, allow_incomplete: bool) -> None:
    """Refuse a cache whose writing was interrupted (``complete: false``) unless allowed: its rows
    are a prefix of the dataset, which silently changes what an SAE is trained or measured on.
    (An empty cache is left to the "no samples" errors of its users, which are more precise.)"""
    if reader.meta.complete or allow_incomplete or reader.n_examples == 0:
        return
    raise StoreError(
        f"cache {reader.path} is incomplete: `sae cache` stopped after {reader.n_examples} rows; finish it by "
        "running the same `sae cache` command again, or pass --allow-incomplete to use the rows it has"
    )
