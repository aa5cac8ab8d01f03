"""``timm``: any timm Vision Transformer (ViT, DeiT, DINOv2, SigLIP, EVA, ... with ``.blocks``).

``--model vit_base_patch16_224.augreg_in21k`` downloads pretrained weights; ``--checkpoint FILE``
loads local ones; ``--opt pretrained=false`` builds a random model, and other ``--opt k=v`` are
passed to ``timm.create_model`` (``img_size=64``, ``depth=2``, ...). Register tokens (DINOv2-reg,
SigLIP2 with registers) are labelled ``register``, never mixed with patches.
"""

from __future__ import annotations

from typing import ClassVar

from sae_core.errors import SAEError
from sae_core.protocols import AdapterRequest

from sae_vision.adapters.common import ViTAdapter, parse_value


class TimmAdapter(ViTAdapter):
    name: ClassVar[str] = "timm"

    def __init__(self, request: AdapterRequest) -> None:
        super().__init__(request)
        import timm
        from timm.data import create_transform, resolve_data_config

        opts = {k: parse_value(v) for k, v in request.options.items() if k != "seed"}
        pretrained = bool(opts.pop("pretrained", True)) and not request.checkpoint
        base = request.model.split(".")[0]
        if not timm.list_models(base) and not timm.list_models(request.model):
            raise SAEError(f"unknown timm model {request.model!r}; see timm.list_models('vit_*')")
        try:
            model = timm.create_model(request.model, pretrained=pretrained, num_classes=0, **opts)
        except TypeError as e:
            raise SAEError(f"timm.create_model({request.model!r}) rejected an --opt: {e}") from None
        except RuntimeError as e:
            raise SAEError(f"could not load timm {request.model!r}: {e}") from None
        if request.checkpoint:
            timm.models.load_checkpoint(model, request.checkpoint, strict=False)
        if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
            raise SAEError(f"{request.model!r} is not a ViT with .blocks and .patch_embed")
        cfg = resolve_data_config({}, model=model)
        img_size = tuple(int(s) for s in model.patch_embed.img_size)
        if tuple(cfg["input_size"][1:]) != img_size:  # e.g. --opt img_size=64 on a 224 model
            cfg["input_size"] = (3, *img_size)
        self.model = model
        self.blocks = model.blocks
        self.transform = create_transform(**cfg, is_training=False)
        self.model_id = request.model
        self.d_model = int(model.embed_dim)
        self.n_cls = 1 if getattr(model, "cls_token", None) is not None else 0
        self.n_reg = int(getattr(model, "num_reg_tokens", 0) or 0)
        prefix = int(getattr(model, "num_prefix_tokens", self.n_cls + self.n_reg))
        self.n_reg = prefix - self.n_cls
        self.grid = tuple(int(g) for g in model.patch_embed.grid_size)
        ps = model.patch_embed.patch_size
        self.patch_size = int(ps[0] if isinstance(ps, tuple | list) else ps)
        self.image_size = tuple(int(s) for s in cfg["input_size"][1:])
        self.setup()

    def run_model(self, pixels):
        self.model.forward_features(pixels)

    def embed(self, pixels):
        return self.model(pixels)  # pooled pre-logits features (created with num_classes=0)
