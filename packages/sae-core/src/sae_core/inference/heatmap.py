"""Per-patch activations drawn over the image region the model saw (resize + center crop).

Shared by ``sae features --image`` and the viewer. Needs Pillow (installed with sae-vision).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sae_core.errors import SAEError
from sae_core.firing_rule import firing, magnitude
from sae_core.protocols.geometry import ImageGeometry


def read_image(path: Any) -> Any:
    """The RGB PIL image at ``path`` — what ``sae features --image`` hands the adapter's
    ``make_inputs`` (adapters receive images, never paths); a one-line error for a file that is
    not an image."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise SAEError("--image needs Pillow: pip install pillow (it comes with sae-vision)") from None
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise SAEError(f"cannot read image {path}: {e}; pass a PNG or JPEG file") from None


def heatmap_overlay(image: Any, patch_acts: np.ndarray, extra: dict[str, Any], size: int = 224,
                    peak: float | None = None) -> Any:
    """The image cropped as the model's eval transform crops it, resized to ``size``, with
    ``patch_acts`` (n_patches,) overlaid: red for positive codes, blue for negative ones, opacity
    |code| relative to ``peak`` (default: the strongest patch).

    ``extra`` is the cache's adapter metadata, read as an
    :class:`~sae_core.protocols.geometry.ImageGeometry` (a bad or missing key is a ``DataError``
    naming it).
    """
    try:
        from PIL import Image
    except ImportError:
        raise SAEError("heatmaps need Pillow: pip install pillow (it comes with sae-vision)") from None

    geo = ImageGeometry.from_extra(extra, n_patches=len(patch_acts))
    w, h = image.size
    crop_h, crop_w = geo.crop or (min(w, h), min(w, h))
    scale = (geo.resize_shorter / min(w, h)) if geo.resize_shorter else max(crop_w / w, crop_h / h)
    cw, ch = crop_w / scale, crop_h / scale  # crop size in original pixels
    left, top = (w - cw) / 2, (h - ch) / 2
    view = image.crop((int(left), int(top), int(left + cw), int(top + ch))).resize((size, size)).convert("RGB")
    grid = np.asarray(patch_acts, dtype=np.float32).reshape(geo.grid)  # (rows, cols)
    peak = float(peak if peak is not None else magnitude(grid).max()) or 1.0
    out = view
    for sign, colour in ((1, (255, 40, 0)), (-1, (0, 90, 255))):
        part = np.where(firing(grid) & (np.sign(grid) == sign), magnitude(grid), 0.0)
        if not part.any():
            continue
        heat = Image.fromarray(np.uint8(255 * np.clip(part / peak, 0, 1))).resize((size, size), Image.Resampling.NEAREST)
        out = Image.composite(Image.new("RGB", (size, size), colour), out, heat.point(lambda v: int(v * 0.6)))
    return out
