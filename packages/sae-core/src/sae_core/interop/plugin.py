"""Registers the built-in export formats (``sae export --format NAME``)."""

from __future__ import annotations

from typing import Any

from sae_core import hookimpl


@hookimpl
def register_exporters(register: Any) -> None:
    from sae_core.interop.dictionary_learning import DictionaryLearningExporter  # lazy: loads torch, numpy
    from sae_core.interop.saelens import SAELensExporter  # lazy: loads torch, numpy
    from sae_core.interop.sparsify import SparsifyExporter  # lazy: loads torch, numpy

    for cls in (SAELensExporter, SparsifyExporter, DictionaryLearningExporter):
        register(cls.name, cls, description=(cls.__doc__ or "").strip())


@hookimpl
def register_stores(register: Any) -> None:
    def saev_store() -> Any:
        from sae_core.stores.saev import SaevStore  # lazy: loads torch, numpy

        return SaevStore()

    def saelens_cache_store() -> Any:
        from sae_core.stores.saelens_cache import SAELensCacheStore  # lazy: loads torch, numpy

        return SAELensCacheStore()

    register("saev", saev_store, description="saev's activation shards (metadata.json + acts*.bin), read in place.")
    register("saelens-cache", saelens_cache_store,
             description="SAELens cached activations (CacheActivationsRunner's dataset on disk), read in place.")
