"""Where an image adapter's patch tokens sit on the image: what the viewer's heatmaps need.

An image adapter records an :class:`ImageGeometry` in its ``spec().extra`` with
``extra.update(geometry.to_extra())``. The keys are those the ViT adapters have always written
(``grid``, ``patch_size``, ``image_size``, ``preprocess``), so existing caches keep their
fingerprints and their heatmaps. ``sae cache`` checks them (:meth:`ImageGeometry.from_extra`)
before caching, and the viewer checks them again, each with a message naming the bad key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sae_core.errors import DataError

DOCS = "see 'Image adapters' in docs/plugins.md"


@dataclass(frozen=True)
class ImageGeometry:
    """Patch grid and preprocessing of an image model, as the viewer maps patches onto images.

    The model sees the original image resized so its shorter side is ``resize_shorter`` pixels
    (None: scaled so the crop just fits), then center-cropped to ``center_crop`` (default
    ``image_size``); the ``grid`` of patch tokens (rows, cols, row-major in the token order)
    covers that crop.
    """

    grid: tuple[int, int]  # patch rows, cols
    image_size: tuple[int, int] | None = None  # model input (height, width) in pixels
    resize_shorter: int | None = None
    center_crop: tuple[int, int] | None = None  # (height, width); None: image_size
    patch_size: int | None = None  # pixels per patch side (informative)

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def crop(self) -> tuple[int, int] | None:
        """The (height, width) region of the resized image that the patch grid covers."""
        return self.center_crop or self.image_size

    def to_extra(self) -> dict[str, Any]:
        """The ``spec().extra`` keys (JSON-able) that describe this geometry."""
        extra: dict[str, Any] = {"grid": [int(g) for g in self.grid]}
        if self.patch_size is not None:
            extra["patch_size"] = int(self.patch_size)
        if self.image_size is not None:
            extra["image_size"] = [int(s) for s in self.image_size]
        extra["preprocess"] = {"resize_shorter": self.resize_shorter,
                               "center_crop": None if self.crop is None else [int(s) for s in self.crop]}
        return extra

    @classmethod
    def from_extra(cls, extra: dict[str, Any], n_patches: int | None = None) -> ImageGeometry:
        """Read and check the geometry in a cache's ``extra``. Without ``grid``, ``n_patches``
        (the number of patch tokens) must be a square. Bad values raise :class:`DataError`."""
        if not isinstance(extra, dict):
            raise DataError(f"image metadata must be a JSON object (spec().extra), got {type(extra).__name__}; {DOCS}")
        if "grid" in extra:
            grid = _pair(extra["grid"], "grid", "[rows, cols] of patch tokens")
        elif n_patches is not None and round(n_patches**0.5) ** 2 == n_patches:
            grid = (round(n_patches**0.5),) * 2
        else:
            raise DataError(f"image metadata lacks 'grid' ([rows, cols] of patch tokens) and {n_patches} patches "
                            f"are not a square; {DOCS}")
        if n_patches is not None and grid[0] * grid[1] != n_patches:
            raise DataError(f"image metadata 'grid' {list(grid)} has {grid[0] * grid[1]} cells but the adapter "
                            f"produces {n_patches} patch tokens; {DOCS}")
        size = extra.get("image_size")
        image_size = None if size is None else _pair(size, "image_size", "[height, width] in pixels")
        pre = extra.get("preprocess") or {}
        if not isinstance(pre, dict):
            raise DataError(f"image metadata 'preprocess' must be an object {{resize_shorter, center_crop}}, got {pre!r}; {DOCS}")
        resize = pre.get("resize_shorter")
        if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int) or resize < 1):
            raise DataError(f"image metadata 'preprocess.resize_shorter' must be a positive integer (pixels) or "
                            f"null, got {resize!r}; {DOCS}")
        crop = pre.get("center_crop")
        center_crop = None if crop is None else _pair(crop, "preprocess.center_crop", "[height, width] in pixels")
        patch = extra.get("patch_size")
        if patch is not None and (isinstance(patch, bool) or not isinstance(patch, int) or patch < 1):
            raise DataError(f"image metadata 'patch_size' must be a positive integer, got {patch!r}; {DOCS}")
        return cls(grid=grid, image_size=image_size, resize_shorter=resize, center_crop=center_crop, patch_size=patch)

    @staticmethod
    def present(extra: dict[str, Any]) -> bool:
        """Whether ``extra`` holds any geometry key (then it must be valid)."""
        return isinstance(extra, dict) and any(k in extra for k in ("grid", "image_size", "preprocess", "patch_size"))


def _pair(value: Any, key: str, what: str) -> tuple[int, int]:
    ok = (isinstance(value, list | tuple) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value))
    if not ok:
        raise DataError(f"image metadata '{key}' must be {what}, got {value!r}; {DOCS}")
    return int(value[0]), int(value[1])
