"""On-demand features of the user's own input (the viewer's "Your input" page).

The only part of the viewer that runs a model: nothing here is called at page load, only when
the user submits a text or an image; the app caches the loaded model per SAE
(``st.cache_resource``). Everything goes through the public API of ``sae_core`` (its
``sae_core.inference`` names).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sae_core import SAECheckpointConfig


def modality(cfg: SAECheckpointConfig | None) -> str | None:
    """What the SAE's model reads ("text", "image", ...), from its adapter plugin; None if unknown."""
    from sae_core import SAEError, get_component

    adapter = cfg.source.adapter if cfg is not None else None
    if not adapter:
        return None
    try:
        return get_component("adapter", adapter).attrs.get("modality")
    except SAEError:
        return None


def load(checkpoint: str | Path) -> tuple[Any, Any]:
    """The SAE's model (re-created from its cache's metadata, slow) and the SAE."""
    from sae_core import HookedModel

    return HookedModel.from_checkpoint(checkpoint)


def run(model: Any, sae: Any, example: Any, top: int) -> dict[str, Any]:
    """Per token / patch top features of one text or image, its top features overall, and the
    dense activations (tokens, d_sae) for highlighting any of them."""
    from sae_core import record_features, token_features, top_features

    result, hook = record_features(model, sae, [example])
    acts = result.features.get(hook.name)
    extra = image_extra(model)
    doc: dict[str, Any] = {"layer": hook.layer, "tokens_kind": hook.tokens, "extra": extra,
                           "tokens": token_features(result, hook, top, extra.get("grid")),
                           "top_features": top_features(result, hook, max(top, 10)),  # max over its tokens
                           "acts": acts.dense().numpy() if acts is not None else np.zeros((0, sae.d_sae), np.float32)}
    if model.modality == "image":
        patch = [i for i, k in enumerate(result.inputs.kinds) if k == "patch"]
        doc["image"] = result.inputs.images[0]
        doc["patch_acts"] = acts.grid(*result.inputs.shape)[0][patch].numpy() if acts is not None and patch else None
    return doc


def image_extra(model: Any) -> dict[str, Any]:
    """The image adapter's grid / preprocessing facts (for heatmaps); empty for text models."""
    return dict(model.adapter.spec().extra) if model.modality == "image" else {}
