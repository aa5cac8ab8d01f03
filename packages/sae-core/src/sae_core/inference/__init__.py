"""Use SAEs inside the model: record which features fire, splice the reconstruction in, ablate,
clamp, scale or steer features — for every adapter that can run its model (hf, tlens, clip, timm,
and plugins implementing ``run_with_hooks``).

    from sae_core.inference import Ablate, HookedModel, SAEHook, Steer
    model, sae = HookedModel.from_checkpoint("runs/demo/run/topk-k16")
    result = model.run(["The quick brown fox."], SAEHook(sae))
    values, ids = result.features[sae.cfg.name].top(5)        # (tokens, 5) per token

See ``docs/using-saes.md``.
"""

from __future__ import annotations

from typing import Any

#: public name -> defining module; loaded on first use (PEP 562), so importing a submodule
#: (``sae_core.inference.target``: the commands' cheap option checks) does not import torch
_NAMES = {
    "Ablate": "edits", "Clamp": "edits", "Edit": "edits", "Scale": "edits", "Steer": "edits",
    "SAEHook": "hook", "HookedModel": "model", "RunResult": "model", "FeatureActs": "records",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'sae_core.inference' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"sae_core.inference.{_NAMES[name]}"), name)
