"""An SAE checkpoint and what re-creates its model, known before any model loads.

Commands validate their options against this (feature ids against ``d_sae``, text vs image
against the adapter's modality, ...) and only then call :meth:`SAETarget.model`, which can take
a while (a model download or load).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from sae_core.errors import SAEError

if TYPE_CHECKING:
    from sae_core.checkpoint.cfg import SAECheckpointConfig
    from sae_core.checkpoint.sae import SAE
    from sae_core.inference.model import HookedModel
    from sae_core.protocols.store import ActivationReader, CacheMetadata


class SAETarget:
    """An SAE, its cache and its adapter, checked from their JSON files alone.

    ``cfg`` (the checkpoint's cfg.json) and ``meta`` (the cache's metadata.json) are read when the
    target is opened; the SAE's weights (``sae``), the cache's reader (``reader``) and the model
    (:meth:`model`) load on first use. So a command validates every option and refusal before it
    imports torch or loads anything: ``sae steer`` on an encoder answers in well under a second.
    """

    def __init__(self, checkpoint: Path, cfg: SAECheckpointConfig, cache: str, meta: CacheMetadata,
                 modality: str, device: str = "cpu", *, sae: SAE | None = None) -> None:
        self.checkpoint = checkpoint
        self.cfg = cfg
        self.cache = cache  # the cache the SAE was trained on (or --data)
        self.meta = meta
        self.modality = modality  # of the adapter plugin that made the cache: "text", "image", ...
        self.device = device
        self._sae = sae
        self._reader: ActivationReader | None = None

    @property
    def sae(self) -> SAE:
        """The SAE's weights, loaded on first use."""
        if self._sae is None:
            from sae_core.checkpoint.directory import load_sae

            self._sae = load_sae(self.checkpoint, device=self.device)
        return self._sae

    @property
    def reader(self) -> ActivationReader:
        """A reader of the SAE's cache, opened on first use."""
        if self._reader is None:
            from sae_core.stores import open_reader

            self._reader = open_reader(self.cache)
        return self._reader

    @property
    def d_sae(self) -> int:
        return int(self.cfg.d_sae)

    @property
    def name(self) -> str:
        return str(self.cfg.name or self.checkpoint.name)

    @property
    def layer(self) -> str:
        return str(self.cfg.source.layer or self.meta.layers[0])

    @property
    def tokens(self) -> str:
        return str(self.cfg.source.tokens or "all")

    def model(self) -> HookedModel:
        """Load the model through its adapter plugin (slow: it imports torch and the model's library)."""
        from sae_core.inference.loading import adapter_for_cache

        adapter = adapter_for_cache(self.meta, self.device)
        from sae_core.inference.model import HookedModel

        return HookedModel(adapter)

    def require(self, modality: str, what: str) -> None:
        """A one-line error unless the SAE's model reads ``modality``."""
        if self.modality != modality:
            article = "an" if modality[:1] in "aeiou" else "a"
            raise SAEError(f"{what} needs {article} {modality} model, but SAE {self.name} reads the {self.modality} model "
                           f"{self.meta.model!r} (adapter {self.meta.adapter!r})")

    def require_generation(self, what: str) -> None:
        """A one-line error when the cache's metadata says its model is not a causal LM (the
        ``hf`` adapter records ``causal``); models whose metadata does not say are checked by
        the adapter when they generate."""
        self.require("text", what)
        if self.meta.extra.get("causal") is False:
            raise SAEError(f"{self.meta.model} is an encoder, not a causal language model: it cannot generate text, so "
                           f"{what} works only on causal LMs (e.g. GPT-2, Pythia); use `sae features` or `sae ablate` "
                           "on encoders")

    def require_features(self, ids: list[int] | tuple[int, ...]) -> None:
        """A one-line error for feature ids outside [0, d_sae) (the message of ``Edit.check``)."""
        bad = [int(i) for i in ids if not 0 <= int(i) < self.d_sae]
        if bad:
            raise SAEError(f"feature id(s) {bad} out of range: the SAE has {self.d_sae} features (0..{self.d_sae - 1})")


def open_target(checkpoint: str | Path, *, data: str | Path | None = None, device: str = "cpu") -> SAETarget:
    """The SAE's config and its cache's metadata (JSON only, no torch); check the adapter plugin
    can run models. Checkpoints of other tools' formats (read through :func:`load_sae`) load
    their weights here."""
    from sae_core.checkpoint.cfg import read_cfg
    from sae_core.errors import CheckpointError
    from sae_core.inference.loading import cache_path
    from sae_core.plugins import get_component
    from sae_core.validate import check_device

    check_device(device)
    checkpoint = Path(checkpoint)
    sae = None
    try:
        cfg = read_cfg(checkpoint)
    except CheckpointError:  # not our cfg.json: a format load_sae recognises, or its one-line error
        from sae_core.checkpoint.directory import load_sae

        sae = load_sae(checkpoint, device=device)
        cfg = sae.cfg
    cache = cache_path(checkpoint, cfg, data)
    meta = _cache_metadata(cache)
    if meta.d_model != cfg.d_in:
        raise SAEError(f"SAE {checkpoint} has d_in={cfg.d_in} but cache {meta.model!r} layers have d_model={meta.d_model}; "
                       "pass the cache it was trained on with --data")
    component = get_component("adapter", meta.adapter)
    factory = component.factory
    if isinstance(factory, type) and not _can_run(factory):
        raise SAEError(f"adapter {meta.adapter!r} cannot run its model with SAEs attached (it does not implement "
                       "run_with_hooks); use hf, tlens, clip or timm, or add it to the plugin")
    return SAETarget(checkpoint, cfg, cache, meta, str(component.attrs.get("modality") or ""), device, sae=sae)


def _cache_metadata(cache: str) -> CacheMetadata:
    """The cache's metadata: read from its metadata.json when it has one (the local store; no
    torch), else through its store's reader."""
    from sae_core.dataclass_parsing import from_dict
    from sae_core.protocols.metadata import CacheMetadata

    file = Path(cache) / "metadata.json"
    if file.is_file():
        try:
            return from_dict(CacheMetadata, json.loads(file.read_text()), strict=False, where=str(file))
        except (ValueError, SAEError):
            pass  # let the store's reader give its own one-line error
    from sae_core.stores import open_reader

    return open_reader(cache).meta


def _can_run(cls: type) -> bool:
    """Whether adapter class ``cls`` implements ``run_with_hooks``."""
    from sae_core.protocols.adapter import ModelAdapter

    if issubclass(cls, ModelAdapter):
        return cls.supports("run_with_hooks")
    return callable(getattr(cls, "run_with_hooks", None))


def parse_feature_ids(raw: str, d_sae: int | None = None) -> list[int]:
    """``"3,17, 42"`` -> [3, 17, 42]; a one-line error for anything else (CLI ``--features``)."""
    try:
        ids = [int(x) for x in raw.replace(" ", "").split(",") if x]
    except ValueError:
        raise SAEError(f"--features expects comma-separated feature ids like 3,17,42, got {raw!r}") from None
    if not ids:
        raise SAEError("--features needs at least one feature id, e.g. --features 3,17")
    if d_sae is not None and any(not 0 <= i < d_sae for i in ids):
        bad = [i for i in ids if not 0 <= i < d_sae]
        raise SAEError(f"feature id(s) {bad} out of range: the SAE has {d_sae} features (0..{d_sae - 1})")
    return ids
