"""``patches`` — an image adapter: a tiny seeded model whose tokens are the patches of a 4×4 grid.

The image is resized (shorter side 32 px) and center-cropped to 32×32, cut into 16 patches of
8×8 RGB pixels (row-major), and run through two layers:

    embed = patches W_e + P                     (16, d)   W_e: (192, d), P: position embedding
    mix   = embed + ReLU(embed W_m)             (16, d)
    image embedding = mean of mix over patches  (d,)

``ImageGeometry`` tells the viewer where each patch lies on the original picture, and
``splice_eval`` lets the ``downstream`` analysis measure the embedding with an SAE spliced in.
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

    def forward(self, x: torch.Tensor, edit: tuple[int, Callable] | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x (b, 16, 192) -> both layers' outputs (b, 16, d) and the image embedding (b, d);
        ``edit=(layer, fn)`` replaces that layer's output h by fn(h) before the model goes on."""
        hs = []
        h = x @ self.w_embed + self.pos  # (b, 16, d)
        for i in range(len(LAYERS)):
            if i == 1:
                h = h + torch.relu(h @ self.w_mix)
            if edit is not None and edit[0] == i:
                h = edit[1](h)
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

    def splice_eval(self, index: np.ndarray, mask: np.ndarray, layer: str, replace: Callable[[torch.Tensor], torch.Tensor],
                    *, dataset: Dataset | None = None, batch_rows: int = 8) -> dict[str, Any]:
        """Cosine of the image embedding with vs without ``layer`` replaced at ``mask``."""
        if dataset is None:
            raise SAEError("patches adapter: splice_eval needs the dataset the cache was made from")
        li, cos, n = LAYERS.index(layer), {"spliced": 0.0, "zero": 0.0}, 0
        for lo in range(0, len(index), batch_rows):
            x = torch.stack([self.patches(dataset[int(e)].data) for e in index["example"][lo : lo + batch_rows, 0]])
            m = torch.from_numpy(mask[lo : lo + batch_rows].astype(bool))  # (b, 16)

            def put(h: torch.Tensor, fn: Callable, m: torch.Tensor = m) -> torch.Tensor:
                h = h.clone()
                h[m] = fn(h[m]).to(h.dtype)
                return h

            clean = self.forward(x)[1]
            for mode, fn in (("spliced", replace), ("zero", torch.zeros_like)):
                other = self.forward(x, (li, lambda h, fn=fn: put(h, fn)))[1]
                cos[mode] += float(torch.nn.functional.cosine_similarity(clean, other, dim=-1).sum())
            n += len(x)
        return {"kind": "embedding_cosine", "embedding": "mean patch embedding",
                "embedding_cosine": cos["spliced"] / max(n, 1), "embedding_cosine_zero_ablated": cos["zero"] / max(n, 1)}
