"""saev's activation directory, read in place: ``metadata.json`` + ``acts000000.bin``, ...

saev's ``ShardWriter`` writes raw float32 memmaps, each of shape
``(n_imgs_per_shard, n_layers, n_patches_per_img [+1 with cls_token], d_vit)`` with
``n_imgs_per_shard = n_patches_per_shard // n_layers // tokens``; image ``i`` is row
``i % n_imgs_per_shard`` of shard ``i // n_imgs_per_shard``. ``metadata.json`` (its ``Metadata``:
``vit_family``, ``vit_ckpt``, ``layers``, ``n_patches_per_img``, ``cls_token``, ``d_vit``,
``n_imgs``, ``n_patches_per_shard``, ``data``) is recognised by those keys (ours carries
``version`` instead), so :func:`sae_core.stores.open_reader` picks this store by content.

Mapped: layers (named by saev's own numbers, e.g. ``"-2"``; ``--layer -2`` selects it by name),
token kinds (``cls`` first when ``cls_token``, then ``patch``: ``--tokens cls|patch`` works),
image identity (the index's ``example`` is saev's image number, ``position`` the token).
Not mapped: the dataset (saev records it as a Python repr, not a spec we can open), so the
viewer shows top examples by image number without the images. Nothing is copied or converted;
writing is refused (make new caches with ``sae cache``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from sae_core.errors import StoreError
from sae_core.protocols.reader import ActivationReader
from sae_core.protocols.store import INDEX_DTYPE, ActivationStore, ActivationWriter, CacheMetadata

METADATA = "metadata.json"
_KEYS = ("d_vit", "layers", "n_patches_per_img", "n_patches_per_shard", "n_imgs")


def _saev_metadata(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((path / METADATA).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and all(k in doc for k in _KEYS) and "version" not in doc else None


class SaevReader(ActivationReader):
    """A saev activation directory through our reader protocol (memmap reads, nothing copied)."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc
        cls = bool(doc.get("cls_token", True))
        n_layers = len(doc["layers"])
        self.tokens = int(doc["n_patches_per_img"]) + int(cls)
        self.d = int(doc["d_vit"])
        self.per_shard = int(doc["n_patches_per_shard"]) // n_layers // self.tokens
        if self.per_shard < 1:
            raise StoreError(f"{path / METADATA}: n_patches_per_shard={doc['n_patches_per_shard']} holds no whole image")
        self.shape = (self.per_shard, n_layers, self.tokens, self.d)  # one shard
        n = int(doc["n_imgs"])
        shards = -(-n // self.per_shard)
        size = int(np.prod(self.shape)) * 4
        for s in range(shards):
            f = self._shard_file(s)
            if not f.is_file() or f.stat().st_size < size:
                raise StoreError(f"saev cache {path} is incomplete: {f.name} is missing or shorter than {size} bytes "
                                 f"({n} images need {shards} shards); finish saev's activation dump")
        self.meta = CacheMetadata(
            adapter="saev", model=f"{doc.get('vit_family', '?')}:{doc.get('vit_ckpt', '?')}",
            layers=[str(layer) for layer in doc["layers"]], d_model=self.d, dtype="float32",
            tokens_per_example=self.tokens, token_kinds=(["cls"] if cls else []) + ["patch"] * int(doc["n_patches_per_img"]),
            dataset={"spec": f"saev:{doc.get('data', '')}"}, extra={"saev": doc}, n_examples=n, complete=True,
        )
        self._maps: dict[int, np.memmap] = {}

    def _shard_file(self, s: int) -> Path:
        return self.path / f"acts{s:06}.bin"

    def _shard(self, s: int) -> np.memmap:
        if s not in self._maps:
            self._maps[s] = np.memmap(self._shard_file(s), dtype=np.float32, mode="r", shape=self.shape)
        return self._maps[s]

    @property
    def n_examples(self) -> int:
        return int(self.doc["n_imgs"])

    def read_examples(self, start: int, stop: int, *, layers: list[int] | None = None
                      ) -> tuple[torch.Tensor, np.ndarray]:
        stop = min(stop, self.n_examples)
        sel = list(range(len(self.meta.layers))) if layers is None else list(layers)
        parts = []
        for lo, hi in _chunks(start, stop, self.per_shard):
            s, a = divmod(lo, self.per_shard)
            parts.append(np.asarray(self._shard(s)[a : a + hi - lo][:, sel]))  # (m, L', T, d)
        acts = np.concatenate(parts) if parts else np.empty((0, len(sel), self.tokens, self.d), np.float32)
        index = np.zeros((stop - start, self.tokens), INDEX_DTYPE) if stop > start else \
            np.empty((0, self.tokens), INDEX_DTYPE)
        index["example"] = np.arange(start, max(stop, start))[:, None]
        index["position"] = np.arange(self.tokens)[None, :]
        index["token"] = -1
        index["valid"] = 1
        return torch.from_numpy(acts.copy()), index


def _chunks(start: int, stop: int, per: int) -> list[tuple[int, int]]:
    """[start, stop) cut at shard boundaries."""
    out, lo = [], start
    while lo < stop:
        hi = min(stop, (lo // per + 1) * per)
        out.append((lo, hi))
        lo = hi
    return out


class SaevStore(ActivationStore):
    """saev's activation shards (metadata.json + acts*.bin), read in place."""

    name: ClassVar[str] = "saev"

    def detect(self, path: str | Path) -> bool:
        p = Path(path)
        return p.is_dir() and _saev_metadata(p) is not None and (p / "acts000000.bin").is_file()

    def open_reader(self, path: str | Path, **options: Any) -> ActivationReader:
        p = Path(path)
        doc = _saev_metadata(p)
        if doc is None:
            raise StoreError(f"{p} is not a saev activation directory (metadata.json with {', '.join(_KEYS)})")
        return SaevReader(p, doc)

    def open_writer(self, root: str | Path, meta: CacheMetadata, **options: Any) -> ActivationWriter:
        raise StoreError("saev activation directories are read in place, not written; make new caches with `sae cache`")
