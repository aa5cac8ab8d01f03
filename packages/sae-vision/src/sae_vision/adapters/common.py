"""What the ViT adapters share: layer resolution, batched loading, hooks, early stop.

Residual-stream activations are captured with forward hooks on the chosen blocks; after the last
chosen block a sentinel exception stops the forward, so caching block 6 of a 12-block ViT costs
half a forward. Images are decoded and preprocessed (with the model's own transforms) in
DataLoader workers; unreadable images are dropped and counted, keeping the other ids stable.

Running the model with SAEs attached (``run_with_hooks``: the ``downstream`` analysis,
``sae features|ablate``) is in :mod:`sae_vision.adapters.running`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from sae_core import (
    ActivationBatch,
    ActivationSpec,
    AdapterRequest,
    Dataset,
    ImageGeometry,
    ModelAdapter,
    SAEError,
)
from torch import nn

from sae_vision.adapters.running import ViTRunning


class _Stop(Exception):
    """Raised by the last hook: nothing after the last chosen block needs computing."""


class _Preprocessed(torch.utils.data.Dataset):
    def __init__(self, dataset: Dataset, transform: Callable[[Any], torch.Tensor], start: int) -> None:
        self.dataset, self.transform, self.start = dataset, transform, start

    def __len__(self) -> int:
        return len(self.dataset) - self.start

    def __getitem__(self, j: int) -> tuple[int, torch.Tensor | None]:
        i = self.start + j
        try:
            return i, self.transform(self.dataset[i].data)
        except Exception:  # unreadable / corrupt image: skipped and counted by the collate
            return i, None


def _collate(items: list[tuple[int, torch.Tensor | None]]) -> tuple[np.ndarray, torch.Tensor | None, int]:
    good = [(i, x) for i, x in items if x is not None]
    ids = np.array([i for i, _ in good], dtype=np.int64)
    pixels = torch.stack([x for _, x in good]) if good else None
    return ids, pixels, len(items) - len(good)


def parse_value(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


class ViTAdapter(ViTRunning, ModelAdapter):
    """Base of the ViT adapters; subclasses load the model and describe its tokens."""

    modality: ClassVar[str] = "image"

    model: nn.Module
    blocks: nn.ModuleList
    transform: Callable[[Any], torch.Tensor]
    model_id: str
    d_model: int
    n_cls: int
    n_reg: int
    grid: tuple[int, int]
    patch_size: int
    image_size: tuple[int, int]

    def __init__(self, request: AdapterRequest) -> None:
        super().__init__(request)
        self.device = torch.device(request.device)
        # random-init models (tests, baselines) must be identical across runs for resume to hold
        torch.manual_seed(int(request.options.get("seed", 0)))

    def setup(self) -> None:
        """Called by subclasses once the model is loaded."""
        self.model.eval().to(self.device)
        n = len(self.blocks)
        self.layer_ids = []
        for raw in self.request.layers:
            name = raw[len("blocks.") :] if raw.startswith("blocks.") else raw
            try:
                i = int(name)
            except ValueError:
                raise SAEError(f"layer {raw!r} is not a block index; use integers 0..{n - 1} (negative allowed)") from None
            if not -n <= i < n:
                raise SAEError(f"layer {i} is out of range: {self.model_id} has {n} blocks (0..{n - 1}, or -1..-{n})")
            self.layer_ids.append(i % n)
        self.n_tokens = self.n_cls + self.n_reg + self.grid[0] * self.grid[1]

    def hook_names(self) -> list[str]:
        """The residual stream after each block: ``blocks.0`` ... (``--layers`` takes the index)."""
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def spec(self) -> ActivationSpec:
        kinds = ["cls"] * self.n_cls + ["register"] * self.n_reg + ["patch"] * (self.grid[0] * self.grid[1])
        return ActivationSpec(
            adapter=self.name,
            model=self.model_id,
            layers=[f"blocks.{i}" for i in self.layer_ids],
            d_model=self.d_model,
            tokens_per_example=self.n_tokens,
            token_kinds=kinds,
            extra={
                **self.geometry().to_extra(),  # grid, patch_size, image_size, preprocess: the viewer's heatmaps
                "checkpoint": self.request.checkpoint,
                "options": dict(self.request.options),
                "example_unit": "img",
            },
        )

    def geometry(self) -> ImageGeometry:
        """How an original image maps onto the patch grid (for heatmaps): resize of the shorter
        side, then a center crop, as in both libraries' eval transforms."""
        resize, crop = None, None
        for t in getattr(self.transform, "transforms", []):
            name = type(t).__name__
            if name == "Resize" or name == "ResizeKeepRatio":
                size = getattr(t, "size", None)
                resize = size if isinstance(size, int) else (min(size) if size else None)
            if name == "CenterCrop":
                crop = tuple(t.size) if isinstance(t.size, tuple | list) else (t.size, t.size)
        return ImageGeometry(grid=tuple(self.grid), image_size=tuple(self.image_size), resize_shorter=resize,
                             center_crop=crop or tuple(self.image_size), patch_size=self.patch_size)

    @torch.inference_mode()
    def forward_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) -> (batch, n_layers, tokens, d_model)."""
        captured: dict[int, torch.Tensor] = {}
        last = max(self.layer_ids)

        def hook(i: int) -> Callable[..., None]:
            def fn(module: nn.Module, inputs: Any, output: Any) -> None:
                out = output[0] if isinstance(output, tuple) else output
                captured[i] = out
                if i == last:
                    raise _Stop

            return fn

        handles = [self.blocks[i].register_forward_hook(hook(i)) for i in sorted(set(self.layer_ids))]
        try:
            self.run_model(pixels.to(self.device))
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        acts = torch.stack([captured[i] for i in self.layer_ids], dim=1)
        if acts.shape[2] != self.n_tokens:  # some ViTs run (tokens, batch, d) internally
            acts = acts.transpose(2, 3) if acts.shape[3] == self.n_tokens else acts
        return acts

    def run_model(self, pixels: torch.Tensor) -> None:
        self.model(pixels)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's final image embedding (batch, dim): open_clip's projected image features,
        timm's pooled features."""
        out = self.model(pixels)
        return out[0] if isinstance(out, tuple) else out

    def iter_batches(
        self, dataset: Dataset, *, start: int = 0, batch_size: int = 64, num_workers: int = 0
    ) -> Iterator[ActivationBatch]:
        loader = torch.utils.data.DataLoader(
            _Preprocessed(dataset, self.transform, start),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for ids, pixels, failed in loader:
            dataset.skipped += failed
            if pixels is None:
                continue
            yield ActivationBatch(acts=self.forward_pixels(pixels), example_ids=ids)
