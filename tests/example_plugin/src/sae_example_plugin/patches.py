"""``patches`` — an image adapter: a tiny seeded model whose tokens are the patches of a 4×4 grid.

The image is resized (shorter side 32 px) and center-cropped to 32×32, cut into 16 patches of
8×8 RGB pixels (row-major), and run through two layers:

    embed = patches W_e + P                     (16, d)   W_e: (192, d), P: position embedding
    mix   = embed + ReLU(embed W_m)             (16, d)
    image embedding = mean of mix over patches  (d,)

``ImageGeometry`` tells the viewer where each patch lies on the original picture.
``make_inputs`` / ``cached_inputs`` / ``run_with_hooks`` run the model with SAEs attached: the
``downstream`` analysis (embedding cosine with an SAE spliced in), ``sae features --image``,
``sae ablate`` and the Python API ``sae_core.inference``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from sae_core import (
    ActivationBatch,
    ActivationSpec,
    AdapterRequest,
    Dataset,
    ImageGeometry,
    LayerHook,
    ModelAdapter,
    ModelInputs,
    ModelOutput,
    SAEError,
)

GRID, PATCH, SIZE = 4, 8, 32
LAYERS = ("embed", "mix")


class PatchAdapter(ModelAdapter):
    """Two-layer toy ViT over 8×8 patches; ``--layers`` embed, mix (or 0, 1, -1)."""

    name: ClassVar[str] = "patches"
    modality: ClassVar[str] = "image"

    def __init__(self, request: AdapterRequest) -> None:
        super().__init__(request)
        self.d_model = int(request.options.get("width", 16))
        gen = torch.Generator().manual_seed(int(request.options.get("seed", 0)))  # deterministic weights
        d_patch = PATCH * PATCH * 3
        self.w_embed = torch.randn(d_patch, self.d_model, generator=gen) / d_patch**0.5
        self.pos = torch.randn(GRID * GRID, self.d_model, generator=gen) * 0.1
        self.w_mix = torch.randn(self.d_model, self.d_model, generator=gen) / self.d_model**0.5
        self.layers = [self._layer(raw) for raw in request.layers]

    @staticmethod
    def _layer(raw: str) -> int:
        if raw in LAYERS:
            return LAYERS.index(raw)
        try:
            return range(len(LAYERS))[int(raw)]
        except (ValueError, IndexError):
            raise SAEError(f"patches adapter: unknown layer {raw!r}; valid: embed, mix (or 0, 1, -1, -2)") from None

    def spec(self) -> ActivationSpec:
        geometry = ImageGeometry(grid=(GRID, GRID), image_size=(SIZE, SIZE), resize_shorter=SIZE,
                                 center_crop=(SIZE, SIZE), patch_size=PATCH)
        return ActivationSpec(
            adapter=self.name, model=self.request.model, layers=[LAYERS[i] for i in self.layers],
            d_model=self.d_model, tokens_per_example=GRID * GRID, token_kinds=["patch"] * (GRID * GRID),
            extra={**geometry.to_extra(), "options": dict(self.request.options)},
        )

    def patches(self, image: Any) -> torch.Tensor:
        """PIL image -> (16, 192) patch pixels in [0, 1]: resize, center crop, cut."""
        w, h = image.size
        s = SIZE / min(w, h)
        image = image.convert("RGB").resize((max(SIZE, round(w * s)), max(SIZE, round(h * s))))
        left, top = (image.size[0] - SIZE) // 2, (image.size[1] - SIZE) // 2
        x = np.asarray(image.crop((left, top, left + SIZE, top + SIZE)), dtype=np.float32) / 255  # (32, 32, 3)
        x = x.reshape(GRID, PATCH, GRID, PATCH, 3).transpose(0, 2, 1, 3, 4)  # (4, 4, 8, 8, 3)
        return torch.from_numpy(x.reshape(GRID * GRID, -1).copy())

    def forward(self, x: torch.Tensor, edits: Mapping[int, Callable] | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x (b, 16, 192) -> both layers' outputs (b, 16, d) and the image embedding (b, d);
        ``edits[i](h)`` may replace layer i's output h (None: unchanged) before the model goes on."""
        hs = []
        h = x @ self.w_embed + self.pos  # (b, 16, d)
        for i in range(len(LAYERS)):
            if i == 1:
                h = h + torch.relu(h @ self.w_mix)
            new = edits[i](h) if edits and i in edits else None
            h = h if new is None else new
            hs.append(h)
        return hs, h.mean(1)

    def iter_batches(
        self, dataset: Dataset, *, start: int = 0, batch_size: int = 64, num_workers: int = 0
    ) -> Iterator[ActivationBatch]:
        for lo in range(start, len(dataset), batch_size):
            ids = np.arange(lo, min(lo + batch_size, len(dataset)), dtype=np.int64)
            x = torch.stack([self.patches(dataset[int(i)].data) for i in ids])  # (b, 16, 192)
            hs, _ = self.forward(x)
            yield ActivationBatch(acts=torch.stack([hs[i] for i in self.layers], dim=1), example_ids=ids)

    # -- running the model with SAEs attached (sae_core.protocols.running) ---------------------
    def _inputs(self, images: list[Any], valid: np.ndarray, example: np.ndarray) -> ModelInputs:
        x = torch.stack([self.patches(im) for im in images])  # (b, 16, 192)
        return ModelInputs(data=x, valid=valid, kinds=["patch"] * (GRID * GRID), example=example, images=images)

    def make_inputs(self, examples: Sequence[Any]) -> ModelInputs:
        """PIL images (``sae features --image FILE`` opens the file and passes the RGB image)."""
        images = list(examples)
        return self._inputs(images, np.ones((len(images), GRID * GRID), dtype=bool), np.arange(len(images)))

    def cached_inputs(self, index: np.ndarray, dataset: Dataset | None = None) -> ModelInputs:
        """Cache rows (``index``: (rows, 16) INDEX_DTYPE records): the images are the dataset's,
        and ``valid`` is the cache's own, so SAEs read exactly the tokens they were trained on."""
        if dataset is None:
            raise SAEError("patches adapter: running the model on cache rows needs the dataset the cache was made from")
        ids = index["example"][:, 0].astype(np.int64)
        return self._inputs([dataset[int(e)].data for e in ids], index["valid"].astype(bool), ids)

    def run_with_hooks(self, inputs: ModelInputs, hooks: Mapping[str, LayerHook], *, output: bool = True) -> ModelOutput:
        """``hooks[layer](acts (b, 16, d), valid (b, 16)) -> new acts or None`` at each hooked layer."""
        valid = torch.from_numpy(inputs.valid)
        edits = {LAYERS.index(name): (lambda h, fn=fn: fn(h, valid)) for name, fn in hooks.items()}
        _, embedding = self.forward(inputs.data, edits)
        if not output:
            return ModelOutput()
        return ModelOutput(kind="embedding", embedding=embedding, embedding_name="mean patch embedding")
