"""Helpers to build small caches with known contents for store/trainer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sae_core.protocols import ActivationBatch, CacheMetadata
from sae_core.stores import open_writer


def make_meta(
    *, n_layers: int = 2, tokens: int = 3, d_model: int = 4, dtype: str = "float32", kinds: list[str] | None = None,
    name: str = "test",
) -> CacheMetadata:
    return CacheMetadata(
        adapter="test",
        model=name,
        layers=[f"layer.{i}" for i in range(n_layers)],
        d_model=d_model,
        dtype=dtype,
        tokens_per_example=tokens,
        token_kinds=kinds or ["cls"] + ["patch"] * (tokens - 1),
        dataset={"spec": "synthetic"},
    )


def unique_acts(start: int, n: int, meta: CacheMetadata) -> torch.Tensor:
    """Activations whose value at [..., 0] encodes (row, layer, token) uniquely."""
    L, T, d = meta.n_layers, meta.tokens_per_example, meta.d_model
    rows = torch.arange(start, start + n, dtype=torch.float32)[:, None, None, None]
    layer = torch.arange(L, dtype=torch.float32)[None, :, None, None]
    tok = torch.arange(T, dtype=torch.float32)[None, None, :, None]
    code = rows * 100 + layer * 10 + tok  # exactly representable in bf16 only for small values
    return code.expand(n, L, T, d).clone() + torch.arange(d, dtype=torch.float32) * 0  # (n, L, T, d)


def write_cache(
    root: Path, meta: CacheMetadata, n: int, *, batch: int = 7, shard_examples: int = 10, valid_fn=None
) -> Path:
    writer = open_writer(root, meta, shard_examples=shard_examples)
    for lo in range(writer.n_done, n, batch):
        hi = min(n, lo + batch)
        valid = None if valid_fn is None else valid_fn(np.arange(lo, hi))
        writer.write(ActivationBatch(acts=unique_acts(lo, hi - lo, meta), example_ids=np.arange(lo, hi), valid=valid))
    return writer.close()


def gaussian_cache(root: Path, n: int = 4000, d: int = 16, layers: int = 2, seed: int = 0, dtype: str = "float32") -> Path:
    meta = CacheMetadata(adapter="test", model=f"gauss{seed}", layers=[f"l{i}" for i in range(layers)], d_model=d,
                         dtype=dtype, tokens_per_example=1, token_kinds=["token"], dataset={"spec": "gauss"})
    gen = torch.Generator().manual_seed(seed)
    w = open_writer(root, meta, shard_examples=1000)
    for lo in range(0, n, 500):
        w.write(ActivationBatch(acts=torch.randn(500, layers, 1, d, generator=gen) * 3 + 1, example_ids=np.arange(lo, lo + 500)))
    return w.close()
