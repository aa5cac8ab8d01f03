"""``npz`` — an activation store: each cache is a directory of numbered ``.npz`` parts.

    <root>/<fingerprint>/npz-cache.json   the CacheMetadata and the list of finished parts
    <root>/<fingerprint>/part-000000.npz  acts (n, n_layers, tokens, d_model), index (n, tokens)

A part is written durably before the list that names it, so a crash loses at most the rows
not yet in a listed part and a rerun continues after the last one. The reader loads every part
into memory and implements only ``n_examples``, ``read_examples`` and ``read_index``: shuffled,
seeded batches, token counts and the rest come from ``ActivationReader``'s defaults.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sae_core import (
    INDEX_DTYPE,
    ActivationBatch,
    ActivationReader,
    ActivationStore,
    ActivationWriter,
    CacheMetadata,
    StoreError,
    atomic_write_bytes,
    atomic_write_json,
    from_dict,
)

MANIFEST = "npz-cache.json"


class NpzWriter(ActivationWriter):
    """Buffers batches and writes a part every ``shard_examples`` rows."""

    def __init__(self, root: str | Path, meta: CacheMetadata, *, shard_examples: int = 256, **_: Any) -> None:
        if meta.dtype not in ("float32", "float16"):
            raise StoreError(f"the npz store holds float32 or float16 activations, not {meta.dtype}; pass --dtype fp32")
        self.meta, self.rows = meta, shard_examples
        self.path = Path(root) / meta.fingerprint()
        self.path.mkdir(parents=True, exist_ok=True)
        self.parts = json.loads((self.path / MANIFEST).read_text())["parts"] if (self.path / MANIFEST).is_file() else []
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def n_done(self) -> int:
        return self.parts[-1]["next_example"] if self.parts else 0

    def write(self, batch: ActivationBatch) -> None:
        self.pending.append((batch.acts.detach().cpu().numpy().astype(self.meta.dtype), batch.index_records()))
        if sum(len(a) for a, _ in self.pending) >= self.rows:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        acts, index = (np.concatenate(x) for x in zip(*self.pending, strict=True))
        name = f"part-{len(self.parts):06d}.npz"
        buf = io.BytesIO()
        np.savez(buf, acts=acts, index=index)
        atomic_write_bytes(self.path / name, buf.getvalue())  # the part first ...
        self.parts.append({"file": name, "n_examples": len(acts), "next_example": int(index["example"].max()) + 1})
        self._save(complete=False)  # ... then the list that names it
        self.pending = []

    def _save(self, *, complete: bool) -> None:
        n = sum(p["n_examples"] for p in self.parts)
        meta = {**dataclasses.asdict(self.meta), "n_examples": n, "complete": complete}
        atomic_write_json(self.path / MANIFEST, {"meta": meta, "parts": self.parts})

    def close(self) -> Path:
        self._flush()
        self._save(complete=True)
        return self.path


class NpzReader(ActivationReader):
    """The whole cache in memory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            doc = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{self.path} is not a readable npz cache ({e}); re-run `sae cache --store npz`") from None
        self.meta = from_dict(CacheMetadata, doc["meta"], strict=False)
        parts = [np.load(self.path / p["file"]) for p in doc["parts"]]
        m = self.meta
        self.acts = np.concatenate([p["acts"] for p in parts]) if parts else np.zeros((0, m.n_layers, m.tokens_per_example, m.d_model))
        self.index = np.concatenate([p["index"] for p in parts]) if parts else np.zeros((0, m.tokens_per_example), INDEX_DTYPE)

    @property
    def n_examples(self) -> int:
        return len(self.acts)

    def read_examples(self, start: int, stop: int, *, layers: list[int] | None = None) -> tuple[torch.Tensor, np.ndarray]:
        if not 0 <= start <= stop <= self.n_examples:
            raise StoreError(f"rows {start}:{stop} are outside cache {self.path} (0..{self.n_examples})")
        acts = self.acts[start:stop] if layers is None else self.acts[start:stop][:, layers]  # (n, L, T, d)
        return torch.from_numpy(np.ascontiguousarray(acts, dtype=np.float32)), self.index[start:stop]

    def read_index(self, start: int, stop: int) -> np.ndarray:
        return self.index[start:stop]


class NpzStore(ActivationStore):
    """Caches as .npz parts (small caches: the reader holds one in memory)."""

    name: ClassVar[str] = "npz"

    def open_writer(self, root: str | Path, meta: CacheMetadata, **options: Any) -> NpzWriter:
        return NpzWriter(root, meta, **options)

    def open_reader(self, path: str | Path, **options: Any) -> NpzReader:
        return NpzReader(path)

    def detect(self, path: str | Path) -> bool:
        return (Path(path) / MANIFEST).is_file()
