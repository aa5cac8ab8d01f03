"""``clip``: open_clip image towers.

``--model ARCH/PRETRAINED`` (``ViT-B-32/openai``, ``ViT-L-14/laion2b_s32b_b82k``), ``hf-hub:org/repo``,
``ARCH`` with ``--checkpoint FILE``, or ``config:FILE.json`` (an open_clip model config, random
init: tests and baselines). Hooks the residual stream after ``visual.transformer.resblocks[i]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from sae_core.errors import SAEError
from sae_core.protocols import AdapterRequest

from sae_vision.adapters.common import ViTAdapter


class ClipAdapter(ViTAdapter):
    name: ClassVar[str] = "clip"

    def __init__(self, request: AdapterRequest) -> None:
        super().__init__(request)
        import open_clip

        name = request.model
        pretrained: str | None = None
        if name.startswith("config:"):
            path = Path(name[len("config:") :])
            if not path.is_file():
                raise SAEError(f"open_clip config {path} does not exist")
            open_clip.add_model_config(str(path))
            arch = path.stem
        elif name.startswith("hf-hub:"):
            arch = name
        else:
            arch, _, pretrained = name.partition("/")
            pretrained = pretrained or None
        if request.checkpoint:
            pretrained = request.checkpoint
        if not name.startswith("hf-hub:") and arch not in open_clip.list_models():
            raise SAEError(f"unknown open_clip model {arch!r}; see open_clip.list_models() (e.g. ViT-B-32, ViT-L-14)")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device="cpu")
        except RuntimeError as e:
            raise SAEError(f"could not load open_clip {name!r}: {e}") from None
        visual = model.visual
        if not hasattr(visual, "transformer"):
            raise SAEError(f"{name!r} is not a ViT image tower (no transformer blocks); use a ViT-* model")
        self.model = visual
        scale = getattr(model, "logit_scale", None)  # CLIP's temperature: zero-shot-style logits in metrics
        self.logit_scale = float(scale.detach().exp()) if isinstance(scale, torch.Tensor) else None
        self.blocks = visual.transformer.resblocks
        self.transform = preprocess
        self.model_id = name
        self.d_model = int(visual.transformer.width)
        self.n_cls = 1 if getattr(visual, "class_embedding", None) is not None else 0
        self.n_reg = 0
        self.grid = tuple(int(g) for g in visual.grid_size)
        ps = visual.patch_size
        self.patch_size = int(ps[0] if isinstance(ps, tuple | list) else ps)
        size = visual.image_size
        self.image_size = tuple(size) if isinstance(size, tuple | list) else (size, size)
        self.setup()
