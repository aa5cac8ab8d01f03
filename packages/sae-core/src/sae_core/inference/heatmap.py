"""Per-patch activations drawn over the image region the model saw (resize + center crop).

Shared by ``sae features --image`` and the viewer. Needs Pillow (installed with sae-vision).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sae_core.errors import SAEError


def heatmap_overlay(image: Any, patch_acts: np.ndarray, extra: dict[str, Any], size: int = 224,
                    peak: float | None = None) -> Any:
    """The image cropped as the model's eval transform crops it (``extra``: the cache's ``grid``,
    ``preprocess`` and ``image_size``), resized to ``size``, with ``patch_acts`` (n_patches,)
    overlaid in red, scaled by ``peak`` (default: their maximum)."""
    try:
        from PIL import Image
    except ImportError:
        raise SAEError("heatmaps need Pillow: pip install pillow (it comes with sae-vision)") from None
    gh, gw = extra.get("grid", [int(len(patch_acts) ** 0.5)] * 2)
    pre = extra.get("preprocess", {}) or {}
    w, h = image.size
    resize = pre.get("resize_shorter")
    crop_h, crop_w = pre.get("center_crop") or extra.get("image_size") or [min(w, h)] * 2
    scale = (resize / min(w, h)) if resize else max(crop_w / w, crop_h / h)
    cw, ch = crop_w / scale, crop_h / scale  # crop size in original pixels
    left, top = (w - cw) / 2, (h - ch) / 2
    view = image.crop((int(left), int(top), int(left + cw), int(top + ch))).resize((size, size))
    grid = np.asarray(patch_acts, dtype=np.float32).reshape(gh, gw)
    peak = float(peak if peak is not None else grid.max()) or 1.0
    heat = Image.fromarray(np.uint8(255 * np.clip(grid / peak, 0, 1))).resize((size, size), Image.Resampling.NEAREST)
    red = Image.new("RGB", (size, size), (255, 40, 0))
    alpha = heat.point(lambda v: int(v * 0.6))
    return Image.composite(red, view.convert("RGB"), alpha)
