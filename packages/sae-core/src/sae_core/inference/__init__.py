"""Use SAEs inside the model: record which features fire, splice the reconstruction in, ablate,
clamp, scale or steer features — for every adapter that can run its model (hf, tlens, clip, timm,
and plugins implementing ``run_with_hooks``).

    from sae_core.inference import Ablate, HookedModel, SAEHook, Steer
    model, sae = HookedModel.from_checkpoint("runs/demo/run/topk-k16")
    result = model.run(["The quick brown fox."], SAEHook(sae))
    values, ids = result.features[sae.cfg.name].top(5)        # (tokens, 5) per token

See ``docs/using-saes.md``.
"""

from sae_core.inference.edits import Ablate, Clamp, Edit, Scale, Steer
from sae_core.inference.hook import SAEHook
from sae_core.inference.model import HookedModel, RunResult
from sae_core.inference.records import FeatureActs

__all__ = ["Ablate", "Clamp", "Edit", "FeatureActs", "HookedModel", "RunResult", "SAEHook", "Scale", "Steer"]
