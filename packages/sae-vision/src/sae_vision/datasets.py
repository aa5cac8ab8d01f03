"""Image datasets: ``folder:PATH``, ``hf:PATH`` and ``samples`` (the offline default).

All are random-access (``ds[i]`` opens image i), so a resumed cache seeks without decoding earlier
images and the viewer can fetch any top-activating image by id. Unreadable images are not fatal:
``ds[i]`` raises :class:`UnreadableImage`, which the adapters' loaders count and skip while the
ids of the other images stay the same.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sae_core.datasets import check_options
from sae_core.errors import DataError
from sae_core.protocols import Dataset, Example

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class UnreadableImage(Exception):
    """An image file that PIL cannot decode (skipped and counted by the loaders)."""


class FolderDataset(Dataset):
    """``folder:PATH``: every image below PATH (recursive, sorted); label = first subfolder."""

    modality: ClassVar[str] = "image"

    def __init__(self, arg: str | None, **options: Any) -> None:
        check_options("folder", options, {"limit", "seed", "split", "field"})
        if not arg:
            raise DataError("folder: needs a path, e.g. --data folder:/path/to/images")
        super().__init__(f"folder:{arg}")
        self.root = Path(arg).expanduser()
        if not self.root.is_dir():
            raise DataError(f"folder:{arg}: no such directory")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if options.get("limit") is not None:
            self.files = self.files[: int(options["limit"])]
        if not self.files:
            raise DataError(f"folder:{arg} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Example:
        from PIL import Image

        path = self.files[index]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except Exception as e:
            raise UnreadableImage(f"{path}: {e}") from None
        rel = path.relative_to(self.root)
        return Example(id=index, data=image, label=self.label_of(index), source=str(rel))

    def label_of(self, index: int) -> str | None:
        """Example ``index``'s class (its first subfolder) without opening the image (probing)."""
        rel = self.files[index].relative_to(self.root)
        return rel.parts[0] if len(rel.parts) > 1 else None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": str(self.root.resolve())}

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.files:
            st = p.stat()
            h.update(f"{p.relative_to(self.root)}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
        return h.hexdigest()[:16]


class HFImageDataset(Dataset):
    """``hf:PATH``: a ``datasets`` dataset saved with save_to_disk, or an imagefolder directory."""

    modality: ClassVar[str] = "image"

    def __init__(self, arg: str | None, **options: Any) -> None:
        check_options("hf", options, {"limit", "seed", "split", "field"})
        if not arg:
            raise DataError("hf: needs a directory, e.g. --data hf:/data/imagenet-val")
        super().__init__(f"hf:{arg}")
        import datasets

        path = Path(arg).expanduser()
        if not path.exists():
            raise DataError(f"hf:{arg}: no such directory")
        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            ds = datasets.load_dataset("imagefolder", data_dir=str(path))
        if isinstance(ds, datasets.DatasetDict):
            split = options.get("split") or ("train" if "train" in ds else next(iter(ds)))
            if split not in ds:
                raise DataError(f"hf:{arg}: no split {split!r}; splits: {', '.join(ds)}")
            ds = ds[split]
        field = options.get("field") or next(
            (k for k, f in ds.features.items() if isinstance(f, datasets.Image)), None
        )
        if field is None or field not in ds.column_names:
            raise DataError(f"hf:{arg}: no image column (columns: {', '.join(ds.column_names)}); pass --field NAME")
        self.label_field = "label" if "label" in ds.column_names else None
        if options.get("limit") is not None:
            ds = ds.select(range(min(len(ds), int(options["limit"]))))
        if len(ds) == 0:
            raise DataError(f"hf:{arg} has no rows")
        self.ds, self.field, self.split = ds, field, options.get("split")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> Example:
        row = self.ds[int(index)]
        try:
            image = row[self.field].convert("RGB")
        except Exception as e:
            raise UnreadableImage(f"row {index}: {e}") from None
        label = row.get(self.label_field) if self.label_field else None
        return Example(id=index, data=image, label=None if label is None else str(label), source=f"row {index}")

    def label_of(self, index: int) -> str | None:
        """Row ``index``'s ``label`` as ``ds[index].label`` gives it, without decoding images: the
        whole column is read once (probing asks for every row's label)."""
        if not self.label_field:
            return None
        if not hasattr(self, "_labels"):
            self._labels = self.ds[self.label_field]  # one column read, not one row at a time
        label = self._labels[int(index)]
        return None if label is None else str(label)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "field": self.field, "split": self.split}

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.ds._fingerprint}{len(self.ds)}".encode()).hexdigest()[:16]


def _sample_images() -> list[tuple[str, Any]]:
    """Real photographs bundled with scikit-image and scikit-learn (no download needed)."""
    from PIL import Image

    images: list[tuple[str, Any]] = []
    try:
        from skimage import data as skdata

        for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "camera", "page", "moon"):
            try:
                arr = getattr(skdata, name)()
            except Exception:
                continue
            images.append((f"skimage/{name}", Image.fromarray(np.asarray(arr)).convert("RGB")))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        for fname, arr in zip(load_sample_images().filenames, load_sample_images().images, strict=True):
            images.append((f"sklearn/{Path(fname).name}", Image.fromarray(arr).convert("RGB")))
    except ImportError:
        pass
    return images


class SampleImages(Dataset):
    """``samples``: seeded random crops/flips of photos that ship with scikit-image/scikit-learn.

    Image i is a deterministic function of (seed, i), so it can be regenerated for the viewer.
    """

    modality: ClassVar[str] = "image"
    _cache: ClassVar[list[tuple[str, Any]] | None] = None

    def __init__(self, arg: str | None = None, **options: Any) -> None:
        check_options("samples", options, {"limit", "seed", "n", "split", "field"})
        super().__init__("samples")
        if SampleImages._cache is None:
            SampleImages._cache = _sample_images()
        self.bases = SampleImages._cache
        if not self.bases:
            raise DataError("samples: neither scikit-image nor scikit-learn sample images are installed")
        self.n = int(options.get("n") or arg or 2048)
        if options.get("limit") is not None:
            self.n = min(self.n, int(options["limit"]))
        self.seed = int(options.get("seed") or 0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Example:
        from PIL import Image

        if not 0 <= index < self.n:
            raise IndexError(index)
        name, base = self.bases[index % len(self.bases)]
        rng = np.random.default_rng([self.seed, index])
        w, h = base.size
        scale = float(rng.uniform(0.25, 1.0))
        cw, ch = max(16, int(w * scale**0.5)), max(16, int(h * scale**0.5))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = base.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return Example(id=index, data=image, label=name, source=f"{name} crop ({x0},{y0},{cw}x{ch})")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed, "bases": [n for n, _ in self.bases]}
