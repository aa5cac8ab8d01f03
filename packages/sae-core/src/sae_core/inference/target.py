"""An SAE checkpoint and what re-creates its model, known before any model loads.

Commands validate their options against this (feature ids against ``d_sae``, text vs image
against the adapter's modality, ...) and only then call :meth:`SAETarget.model`, which can take
a while (a model download or load).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sae_core.checkpoint.directory import load_sae
from sae_core.errors import SAEError
from sae_core.inference.opening import open_checkpoint
from sae_core.stores import open_reader

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

            self._sae = load_sae(self.checkpoint, device=self.device)
        return self._sae

    @property
    def reader(self) -> ActivationReader:
        """A reader of the SAE's cache, opened on first use."""
        if self._reader is None:

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
        from sae_core.inference.loading import adapter_for_cache  # lazy: tests patch it there

        adapter = adapter_for_cache(self.meta, self.device)
        from sae_core.inference.model import HookedModel  # lazy: loads torch, numpy

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
    found = open_checkpoint(checkpoint, data=data, device=device)
    return SAETarget(found.checkpoint, found.cfg, found.cache, found.meta, found.modality, device, sae=found.sae)


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
