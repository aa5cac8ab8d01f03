"""Re-create the model an SAE was trained on, from the metadata of its cache.

A checkpoint's ``cfg.json`` names its cache; the cache's metadata records the adapter, the
model, the layers and what the adapter needs to build the same model again (``checkpoint``,
``context_size``, ``options`` in ``extra``) — the same request ``sae cache`` made.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae_core.analyses.runner import _recorded_cache
from sae_core.errors import SAEError

if TYPE_CHECKING:
    from sae_core.checkpoint.cfg import SAECheckpointConfig
    from sae_core.protocols.adapter import AdapterRequest, ModelAdapter
    from sae_core.protocols.store import CacheMetadata


def cache_path(checkpoint: Path, cfg: SAECheckpointConfig, data: str | Path | None = None) -> str:
    """The cache the SAE was trained on (as ``sae analyze`` finds it), or ``data``."""

    if data is None and not cfg.source.cache:
        raise SAEError(f"{checkpoint} does not record the cache it was trained on (imported SAE?); "
                       "pass --data CACHE, a cache of the model and layer it reads")
    try:
        return str(data) if data is not None else _recorded_cache(checkpoint, cfg)
    except SAEError as e:
        raise SAEError(f"{e}; the model is re-created from that cache's metadata, so pass --data CACHE "
                       "(any cache of the same model made by `sae cache`)") from None


def request_for_cache(meta: CacheMetadata, device: str = "cpu") -> AdapterRequest:
    """The :class:`AdapterRequest` that re-creates the model of a cache."""
    from sae_core.protocols.adapter import AdapterRequest  # lazy: loads numpy

    extra = meta.extra
    return AdapterRequest(
        model=meta.model, layers=list(meta.layers), checkpoint=extra.get("checkpoint"), device=device,
        context_size=extra.get("context_size"),
        options={k: str(v) for k, v in (extra.get("options") or {}).items()},
    )


def adapter_for_cache(meta: CacheMetadata, device: str = "cpu") -> ModelAdapter:
    """The cache's adapter plugin, built on its recorded request."""
    from sae_core.caching import build_adapter  # lazy: loads torch, numpy

    return build_adapter(meta.adapter, request_for_cache(meta, device))


#: the one model kept in memory by :func:`shared_adapter` ({key: adapter}); analyses of one
#: ``sae analyze`` (downstream, logit effects) over the SAEs of a cache share it
_SHARED: dict[str, Any] = {}


def shared_adapter(component: Any, meta: CacheMetadata, device: str = "cpu") -> Any:
    """The cache's adapter built from ``component`` on its recorded request, kept in memory so
    every analysis that runs the model (``downstream``, ``logit-effects``) loads it once per
    process; a different model replaces it (one model in memory at a time)."""
    import json

    request = request_for_cache(meta, device)
    key = json.dumps([meta.adapter, request.__dict__], sort_keys=True, default=str)
    if key not in _SHARED:
        _SHARED.clear()
        _SHARED[key] = component.build(request)
    return _SHARED[key]
