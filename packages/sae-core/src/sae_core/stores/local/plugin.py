"""Registers the built-in ``local`` activation store."""

from __future__ import annotations

from typing import Any

from sae_core import hookimpl


def _local_store() -> Any:
    from sae_core.stores.local.store import LocalStore  # lazy: loads torch, numpy

    return LocalStore()


@hookimpl
def register_stores(register: Any) -> None:
    register("local", _local_store, description="Sharded raw arrays in a local directory (memmap reads).")
