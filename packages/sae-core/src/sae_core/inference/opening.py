"""An SAE checkpoint, its cache and its adapter plugin, checked from JSON files alone.

Shared by :func:`sae_core.inference.target.open_target` (the commands' cheap option checks) and
:meth:`HookedModel.from_checkpoint <sae_core.inference.model.HookedModel.from_checkpoint>`, which
loads the model: neither imports the other's module for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sae_core.checkpoint.cfg import read_cfg
from sae_core.checkpoint.directory import load_sae
from sae_core.dataclass_parsing import from_dict
from sae_core.errors import CheckpointError, SAEError
from sae_core.inference.loading import cache_path
from sae_core.stores import open_reader
from sae_core.validate import check_device

if TYPE_CHECKING:
    from sae_core.checkpoint.cfg import SAECheckpointConfig
    from sae_core.checkpoint.sae import SAE
    from sae_core.protocols.store import CacheMetadata


@dataclass(frozen=True)
class OpenedCheckpoint:
    """What :func:`open_checkpoint` found: the SAE's config, its cache and that cache's metadata."""

    checkpoint: Path
    cfg: SAECheckpointConfig
    cache: str  # the cache the SAE was trained on (or --data)
    meta: CacheMetadata
    modality: str  # of the adapter plugin that made the cache: "text", "image", ...
    sae: SAE | None  # loaded already for other tools' formats (their config comes with the weights)


def open_checkpoint(checkpoint: str | Path, *, data: str | Path | None = None, device: str = "cpu") -> OpenedCheckpoint:
    """Read the SAE's config and its cache's metadata (JSON only, no torch) and check the adapter
    plugin can run models; a one-line error otherwise."""
    from sae_core.plugins import get_component  # lazy: loads pluggy

    check_device(device)
    checkpoint = Path(checkpoint)
    sae = None
    try:
        cfg = read_cfg(checkpoint)
    except CheckpointError:  # not our cfg.json: a format load_sae recognises, or its one-line error

        sae = load_sae(checkpoint, device=device)
        cfg = sae.cfg
    cache = cache_path(checkpoint, cfg, data)
    meta = _cache_metadata(cache)
    if meta.d_model != cfg.d_in:
        raise SAEError(f"SAE {checkpoint} has d_in={cfg.d_in} but cache {meta.model!r} layers have d_model={meta.d_model}; "
                       "pass the cache it was trained on with --data")
    component = get_component("adapter", meta.adapter)
    factory = component.factory
    if isinstance(factory, type) and not can_run_hooks(factory):
        raise SAEError(f"adapter {meta.adapter!r} cannot run its model with SAEs attached (it does not implement "
                       "run_with_hooks); use hf, tlens, clip or timm, or add it to the plugin")
    return OpenedCheckpoint(checkpoint, cfg, cache, meta, str(component.attrs.get("modality") or ""), sae)


def _cache_metadata(cache: str) -> CacheMetadata:
    """The cache's metadata: read from its metadata.json when it has one (the local store; no
    torch), else through its store's reader."""
    from sae_core.protocols.metadata import CacheMetadata  # lazy: loads numpy

    file = Path(cache) / "metadata.json"
    if file.is_file():
        try:
            return from_dict(CacheMetadata, json.loads(file.read_text()), strict=False, where=str(file))
        except (ValueError, SAEError):
            pass  # let the store's reader give its own one-line error

    return open_reader(cache).meta


def can_run_hooks(cls: type) -> bool:
    """Whether adapter class ``cls`` implements ``run_with_hooks``."""
    from sae_core.protocols.adapter import ModelAdapter  # lazy: loads numpy

    if issubclass(cls, ModelAdapter):
        return cls.supports("run_with_hooks")
    return callable(getattr(cls, "run_with_hooks", None))


