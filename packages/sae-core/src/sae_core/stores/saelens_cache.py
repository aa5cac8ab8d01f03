"""SAELens cached activations (``CacheActivationsRunner``'s output), read in place.

The runner saves a Hugging Face dataset to disk (``dataset_info.json``, ``state.json``,
``data-*.arrow``): one row per sequence, an ``Array2D`` column ``(context_size, d_in)`` named by
its hook, and ``token_ids`` ``(context_size,)``. It is recognised by that content (an
``Array2D`` feature in ``dataset_info.json``). Mapped: each Array2D column is a layer named by
its hook, each row an example (``example`` = the row: SAELens shuffles rows by default and
keeps no other identity), ``token_ids`` the index's tokens, every position a ``token``. Not
mapped: the model and dataset (SAELens writes them only beside a Hub push,
``cache_activations_runner_cfg.json``, read when present). Needs the ``datasets`` package
(SAELens depends on it); writing is refused.
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

INFO = "dataset_info.json"
RUNNER_CFG = "cache_activations_runner_cfg.json"


def _hook_columns(path: Path) -> dict[str, list[int]] | None:
    """Array2D columns (hook name -> [context_size, d_in]) of a saved dataset, or None."""
    try:
        feats = json.loads((path / INFO).read_text()).get("features") or {}
    except (OSError, ValueError, AttributeError):
        return None
    cols = {k: list(v["shape"]) for k, v in feats.items() if isinstance(v, dict) and v.get("_type") == "Array2D"}
    return cols or None


class SAELensCacheReader(ActivationReader):
    def __init__(self, path: Path, cols: dict[str, list[int]]) -> None:
        try:
            import datasets
        except ImportError:
            raise StoreError(f"{path} is a SAELens activation cache; reading it needs the datasets package "
                             "(pip install datasets)") from None
        shapes = {tuple(s) for s in cols.values()}
        if len(shapes) != 1:
            raise StoreError(f"{path}: SAELens cache columns have different shapes {sorted(shapes)}; one shape is read")
        (ctx, d), = shapes
        self.path = path
        self.ds = datasets.load_from_disk(str(path)).with_format("numpy")
        self.hooks = list(cols)
        runner: dict[str, Any] = {}
        if (path / RUNNER_CFG).is_file():
            runner = json.loads((path / RUNNER_CFG).read_text())
        self.meta = CacheMetadata(
            adapter="saelens-cache", model=str(runner.get("model_name", "unknown")), layers=self.hooks, d_model=d,
            dtype="float32", tokens_per_example=ctx, token_kinds=["token"] * ctx,
            dataset={"spec": f"saelens-cache:{runner.get('dataset_path', '')}"}, extra={"saelens_runner": runner},
            n_examples=len(self.ds), complete=True,
        )

    @property
    def n_examples(self) -> int:
        return len(self.ds)

    def read_examples(self, start: int, stop: int, *, layers: list[int] | None = None
                      ) -> tuple[torch.Tensor, np.ndarray]:
        stop = min(stop, self.n_examples)
        sel = list(range(len(self.hooks))) if layers is None else list(layers)
        ctx, d = self.meta.tokens_per_example, self.meta.d_model
        if stop <= start:
            return torch.empty(0, len(sel), ctx, d), np.empty((0, ctx), INDEX_DTYPE)
        rows = self.ds[start:stop]
        acts = np.stack([np.asarray(rows[self.hooks[i]], np.float32) for i in sel], axis=1)  # (n, L', ctx, d)
        index = np.zeros((stop - start, ctx), INDEX_DTYPE)
        index["example"] = np.arange(start, stop)[:, None]
        index["position"] = np.arange(ctx)[None, :]
        index["token"] = np.asarray(rows["token_ids"], np.int32) if "token_ids" in rows else -1
        index["valid"] = 1
        return torch.from_numpy(np.ascontiguousarray(acts)), index


class SAELensCacheStore(ActivationStore):
    """SAELens's cached activations (a dataset saved to disk by CacheActivationsRunner), read in place."""

    name: ClassVar[str] = "saelens-cache"

    def detect(self, path: str | Path) -> bool:
        p = Path(path)
        return p.is_dir() and (p / "state.json").is_file() and _hook_columns(p) is not None

    def open_reader(self, path: str | Path, **options: Any) -> ActivationReader:
        p = Path(path)
        cols = _hook_columns(p)
        if cols is None:
            raise StoreError(f"{p} is not a SAELens activation cache (no Array2D column in {INFO})")
        return SAELensCacheReader(p, cols)

    def open_writer(self, root: str | Path, meta: CacheMetadata, **options: Any) -> ActivationWriter:
        raise StoreError("SAELens activation caches are read in place, not written; make new caches with `sae cache`")
