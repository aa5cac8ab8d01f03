"""Running a ViT with callbacks on its blocks (``ViTAdapter``'s half of
:mod:`sae_core.protocols.running`): what ``sae features|ablate``, the Python API of
``sae_core.inference`` and the ``downstream`` analysis run on.

A layer ``blocks.i`` (or ``i``, negative allowed) is the residual stream after block ``i``; its
output is handed to the callback batch first even where the model runs blocks as
(tokens, batch, d). The output is the model's final image embedding (open_clip: the projected
image features, with CLIP's ``logit_scale``; timm: the pooled pre-logits features). Without
output the forward stops after the last hooked block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_core import Dataset, LayerHook, ModelInputs, ModelOutput, SAEError
from torch import nn


class _Stop(Exception):
    """Raised after the last hooked block when no output is wanted."""


def open_image(example: Any) -> Any:
    """A PIL image from a PIL image or a path."""
    if isinstance(example, str | Path):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(example) as im:
                return im.convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise SAEError(f"cannot read image {example}: {e}; pass a PNG/JPEG file") from None
    return example


class ViTRunning:
    """Mixin of ``ViTAdapter`` (uses its blocks, transform, device and token layout)."""

    blocks: nn.ModuleList
    transform: Any
    device: torch.device
    n_tokens: int
    embedding_name: str = "final image embedding"
    logit_scale: float | None = None  # CLIP sets its learned temperature

    def _batch_first(self, out: torch.Tensor) -> bool:
        """Whether a block output is (batch, tokens, d); some ViTs run (tokens, batch, d)."""
        return not (out.shape[1] != self.n_tokens and out.shape[0] == self.n_tokens)

    def _block(self, layer: str) -> int:
        name = layer[len("blocks.") :] if layer.startswith("blocks.") else layer
        n = len(self.blocks)
        try:
            i = int(name)
        except ValueError:
            raise SAEError(f"layer {layer!r} is not a block; use blocks.<0..{n - 1}>") from None
        if not -n <= i < n:
            raise SAEError(f"layer {layer!r} is out of range: the model has {n} blocks")
        return i % n

    # -- inputs -------------------------------------------------------------------------------------
    def _inputs(self, images: list[Any], valid: np.ndarray, example: np.ndarray) -> ModelInputs:
        pixels = torch.stack([self.transform(im) for im in images])  # (b, 3, H, W)
        return ModelInputs(data=pixels, valid=valid, kinds=list(self.spec().token_kinds), example=example, images=images)

    def make_inputs(self, examples: Sequence[Any]) -> ModelInputs:
        """Images (PIL or paths), preprocessed with the model's own eval transform."""
        images = [open_image(e) for e in examples]
        return self._inputs(images, np.ones((len(images), self.n_tokens), dtype=bool), np.arange(len(images)))

    def cached_inputs(self, index: np.ndarray, dataset: Dataset | None = None) -> ModelInputs:
        """Cache rows: the images are ``dataset[index["example"][i, 0]]``."""
        if dataset is None:
            raise SAEError("running a ViT on cache rows needs the dataset the cache was made from")
        ids = index["example"][:, 0].astype(np.int64)
        return self._inputs([dataset[int(e)].data for e in ids], index["valid"].astype(bool), ids)

    # -- running ------------------------------------------------------------------------------------
    @torch.no_grad()
    def run_with_hooks(self, inputs: ModelInputs, hooks: Mapping[str, LayerHook], *, output: bool = True) -> ModelOutput:
        valid = torch.from_numpy(np.asarray(inputs.valid, dtype=bool)).to(self.device)  # (b, T)
        at = {self._block(layer): fn for layer, fn in hooks.items()}
        last = max(at, default=-1)

        def make(i: int, fn: LayerHook | None) -> Any:
            def hook(module: nn.Module, args: Any, output_: Any) -> Any:
                out = output_[0] if isinstance(output_, tuple) else output_
                first = self._batch_first(out)
                new = None if fn is None else fn(out if first else out.transpose(0, 1), valid)
                if not output and i == last:
                    raise _Stop
                if new is None:
                    return None
                new = new if first else new.transpose(0, 1)
                return (new, *output_[1:]) if isinstance(output_, tuple) else new

            return hook

        handles = [self.blocks[i].register_forward_hook(make(i, fn)) for i, fn in at.items()]
        pixels = inputs.data.to(self.device)
        try:
            if not output:
                if at:
                    self.run_model(pixels)
                return ModelOutput()
            emb = self.embed(pixels)  # (b, dim)
        except _Stop:
            return ModelOutput()
        finally:
            for h in handles:
                h.remove()
        return ModelOutput(kind="embedding", embedding=emb, embedding_name=self.embedding_name,
                           logit_scale=self.logit_scale)
