"""``shapes:N`` — an image dataset: N synthetic pictures, each a coloured disc or square."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from sae_core import DataError, Dataset, Example


class ShapesDataset(Dataset):
    """N 48×40 RGB images of one shape on a noisy grey background; image i is seeded by (seed, i)."""

    modality = "image"

    def __init__(self, arg: str | None, *, seed: int | str = 0, limit: int | str | None = None, **options: Any):
        if options:
            raise DataError(f"shapes dataset: unknown option(s) {sorted(options)}; valid: seed, limit")
        super().__init__(f"shapes:{arg}")
        try:
            self.n = int(arg or 64)
        except ValueError:
            raise DataError(f"shapes:N needs an integer N, got {arg!r}") from None
        self.n = min(self.n, int(limit)) if limit is not None else self.n
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < self.n:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        h, w = 40, 48
        pixels = 128 + rng.normal(0, 12, (h, w, 3))  # (H, W, 3) grey background
        cy, cx, r = rng.integers(8, h - 8), rng.integers(8, w - 8), rng.integers(4, 9)
        yy, xx = np.mgrid[:h, :w]
        disc = bool(rng.integers(2))
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2 if disc else (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        pixels[inside] = rng.integers(0, 256, 3)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        return Example(id=index, data=image, label="disc" if disc else "square")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed}
