"""An SAE checkpoint and what re-creates its model, known before any model loads.

Commands validate their options against this (feature ids against ``d_sae``, text vs image
against the adapter's modality, ...) and only then call :meth:`SAETarget.model`, which can take
a while (a model download or load).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sae_core.errors import SAEError

if TYPE_CHECKING:
    from sae_core.inference.model import HookedModel
    from sae_core.protocols.store import ActivationReader, CacheMetadata
    from sae_core.sae_module import SAE


@dataclass
class SAETarget:
    checkpoint: Path
    sae: SAE
    reader: ActivationReader  # the cache the SAE was trained on (or --data)
    modality: str  # of the adapter plugin that made the cache: "text", "image", ...
    device: str = "cpu"

    @property
    def meta(self) -> CacheMetadata:
        return self.reader.meta

    @property
    def name(self) -> str:
        return str(self.sae.cfg.name or self.checkpoint.name)

    @property
    def layer(self) -> str:
        return str(self.sae.cfg.source.layer or self.meta.layers[0])

    @property
    def tokens(self) -> str:
        return str(self.sae.cfg.source.tokens or "all")

    def model(self) -> HookedModel:
        """Load the model through its adapter plugin (slow)."""
        from sae_core.inference.loading import adapter_for_cache
        from sae_core.inference.model import HookedModel

        return HookedModel(adapter_for_cache(self.meta, self.device))

    def require(self, modality: str, what: str) -> None:
        """A one-line error unless the SAE's model reads ``modality``."""
        if self.modality != modality:
            article = "an" if modality[:1] in "aeiou" else "a"
            raise SAEError(f"{what} needs {article} {modality} model, but SAE {self.name} reads the {self.modality} model "
                           f"{self.meta.model!r} (adapter {self.meta.adapter!r})")


def open_target(checkpoint: str | Path, *, data: str | Path | None = None, device: str = "cpu") -> SAETarget:
    """Load the SAE (cheap) and its cache's metadata; check the adapter plugin can run models."""
    from sae_core.checkpoint import load_sae
    from sae_core.inference.loading import cache_path
    from sae_core.plugins import get_component
    from sae_core.stores import open_reader
    from sae_core.validate import check_device

    check_device(device)
    checkpoint = Path(checkpoint)
    sae = load_sae(checkpoint, device=device)
    reader = open_reader(cache_path(checkpoint, sae.cfg, data))
    meta = reader.meta
    if meta.d_model != sae.d_in:
        raise SAEError(f"SAE {checkpoint} has d_in={sae.d_in} but cache {meta.model!r} layers have d_model={meta.d_model}; "
                       "pass the cache it was trained on with --data")
    component = get_component("adapter", meta.adapter)
    factory = component.factory
    if isinstance(factory, type) and not _can_run(factory):
        raise SAEError(f"adapter {meta.adapter!r} cannot run its model with SAEs attached (it does not implement "
                       "run_with_hooks); use hf, tlens, clip or timm, or add it to the plugin")
    return SAETarget(checkpoint, sae, reader, str(component.attrs.get("modality") or ""), device)


def _can_run(cls: type) -> bool:
    """Whether adapter class ``cls`` implements ``run_with_hooks``."""
    from sae_core.protocols.adapter import ModelAdapter

    if issubclass(cls, ModelAdapter):
        return cls.supports("run_with_hooks")
    return callable(getattr(cls, "run_with_hooks", None))
