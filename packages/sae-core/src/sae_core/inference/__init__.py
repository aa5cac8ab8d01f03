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

from sae_core.lazy import lazy_names

#: public name -> defining module; loaded on first use (PEP 562), so importing a submodule
#: (``sae_core.inference.target``: the commands' cheap option checks) does not import torch
_WHERE = {
    "Ablate": "edits", "Clamp": "edits", "Edit": "edits", "Scale": "edits", "Steer": "edits",
    "SAEHook": "hook", "HookedModel": "model", "RunResult": "model", "FeatureActs": "records",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
