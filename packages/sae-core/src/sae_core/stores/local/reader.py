"""Reader of the local sharded store: memory-mapped shards, shuffled or sequential batches.

Shuffled reads are the hot path of training. They read contiguous row chunks in a random order on
I/O threads (so the page cache / disk see large sequential reads), pool about ``buffer_bytes`` of
selected tokens into a window, permute the window and cut it into batches: memory stays
O(buffer), every token is yielded once per epoch, and the order depends only on ``(seed, epoch)``
because chunk results are consumed in planned order whatever the thread timing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_core.config import from_dict
from sae_core.errors import StoreError
from sae_core.protocols.store import INDEX_DTYPE, ActivationReader, CacheMetadata
from sae_core.stores.local import format as fmt
from sae_core.stores.local.shuffle import Chunk, group_windows, plan_chunks

TOKEN_FILTERS = ("all", "cls", "patch", "register", "token")
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def raw_to_torch(raw: np.ndarray, dtype: str) -> torch.Tensor:
    """Storage array -> tensor of the stored dtype, without copying."""
    t = torch.from_numpy(raw)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


class LocalReader(ActivationReader):
    """Opens ``path`` (a cache directory) read-only."""

    def __init__(self, path: str | Path, *, expect_dtype: str | None = None, io_threads: int = 2) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise StoreError(f"{self.path} is not a directory; pass the cache directory printed by `sae cache`")
        raw_meta = fmt.read_json(self.path / fmt.METADATA, "cache metadata")
        self.meta = from_dict(CacheMetadata, raw_meta, strict=False, where=str(self.path / fmt.METADATA))
        if expect_dtype is not None:
            from sae_core.caching import normalize_dtype

            if normalize_dtype(expect_dtype) != self.meta.dtype:
                raise StoreError(
                    f"{self.path} stores {self.meta.dtype} activations, not {normalize_dtype(expect_dtype)}; "
                    f"read it with dtype {self.meta.dtype} (or re-cache with --dtype {expect_dtype})"
                )
        self._np_dtype = fmt.np_dtype(self.meta.dtype)
        doc = fmt.read_json(self.path / fmt.SHARDS, "shard list") if (self.path / fmt.SHARDS).exists() else {}
        self.shards: list[dict[str, Any]] = list(doc.get("shards", []))
        m = self.meta
        row_shape = (m.n_layers, m.tokens_per_example, m.d_model)
        row_bytes = int(np.prod(row_shape)) * self._np_dtype.itemsize
        self._acts: list[np.ndarray] = []
        self._index: list[np.ndarray] = []
        starts = [0]
        for shard in self.shards:
            n = int(shard["n_examples"])
            for name, expected in (
                (shard["file"], n * row_bytes),
                (shard["index_file"], n * m.tokens_per_example * INDEX_DTYPE.itemsize),
            ):
                f = self.path / name
                size = f.stat().st_size if f.exists() else None
                if size != expected:
                    state = "missing" if size is None else f"truncated ({size} bytes, expected {expected})"
                    raise StoreError(
                        f"shard {f} is {state}; re-run the same `sae cache` command to rewrite it"
                    )
            self._acts.append(np.memmap(self.path / shard["file"], self._np_dtype, "r", shape=(n, *row_shape)))
            self._index.append(
                np.memmap(self.path / shard["index_file"], INDEX_DTYPE, "r", shape=(n, m.tokens_per_example))
            )
            starts.append(starts[-1] + n)
        self._starts = np.asarray(starts, dtype=np.int64)
        self.io_threads = max(1, io_threads)

    # -- description --------------------------------------------------------------------------
    @property
    def n_examples(self) -> int:
        """Rows in finished shards (images or text windows)."""
        return int(self._starts[-1])

    @property
    def d_model(self) -> int:
        return self.meta.d_model

    def layer_index(self, layer: int | str) -> int:
        """Index into the cache's layers of ``layer`` (an int, negative allowed, or a name)."""
        names = self.meta.layers
        if isinstance(layer, str) and layer in names:
            return names.index(layer)
        try:
            i = int(layer)
        except (TypeError, ValueError):
            raise StoreError(
                f"layer {layer!r} is not in cache {self.path}; its layers are {names} (or indices 0..{len(names) - 1})"
            ) from None
        if not -len(names) <= i < len(names):
            raise StoreError(
                f"layer index {i} is out of range for cache {self.path}, which holds {len(names)} layer(s): {names}"
            )
        return i % len(names)

    def positions(self, tokens: str = "all") -> np.ndarray:
        """Token positions selected by the ``tokens`` filter."""
        if tokens not in TOKEN_FILTERS:
            raise StoreError(f"unknown token filter {tokens!r}; use one of {', '.join(TOKEN_FILTERS)}")
        kinds = self.meta.token_kinds
        pos = np.array([i for i, k in enumerate(kinds) if tokens == "all" or k == tokens], dtype=np.int64)
        if len(pos) == 0:
            raise StoreError(f"cache {self.path} has no {tokens!r} tokens; its token kinds are {sorted(set(kinds))}")
        return pos

    def n_tokens(self, tokens: str = "all") -> int:
        """Number of samples one epoch yields with this filter (valid tokens only)."""
        pos = self.positions(tokens)
        total = 0
        for shard, index in zip(self.shards, self._index, strict=True):
            counts = shard.get("valid_per_position")
            if counts is None:
                counts = index["valid"].astype(bool).sum(axis=0)
            total += int(np.asarray(counts)[pos].sum())
        return total

    # -- reading ------------------------------------------------------------------------------
    def _read_rows(
        self, start: int, stop: int, layers: list[int], positions: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw acts ``(n, L, P, d)`` and index records ``(n, P)`` of global rows [start, stop)."""
        acts_parts, index_parts = [], []
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        s = first
        while s < len(self._acts) and self._starts[s] < stop:
            lo = max(start, int(self._starts[s])) - int(self._starts[s])
            hi = min(stop, int(self._starts[s + 1])) - int(self._starts[s])
            mm = self._acts[s][lo:hi]
            idx = self._index[s][lo:hi]
            all_layers = layers == list(range(self.meta.n_layers))
            a = mm if all_layers else mm[:, layers]
            if positions is not None and len(positions) != self.meta.tokens_per_example:
                a = a[:, :, positions]
                idx = idx[:, positions]
            acts_parts.append(np.ascontiguousarray(a))
            index_parts.append(np.asarray(idx))
            s += 1
        if not acts_parts:
            return (
                np.empty((0, len(layers), 0, self.meta.d_model), self._np_dtype),
                np.empty((0, 0), INDEX_DTYPE),
            )
        if len(acts_parts) == 1:
            return acts_parts[0], index_parts[0]
        return np.concatenate(acts_parts), np.concatenate(index_parts)

    def _load_samples(self, chunk: Chunk, layers: list[int], positions: np.ndarray) -> np.ndarray:
        """Selected valid tokens of a chunk as raw samples ``(m, L, d)``."""
        acts, index = self._read_rows(chunk.start, chunk.stop, layers, positions)
        n, n_layers, n_pos, d = acts.shape
        samples = acts.transpose(0, 2, 1, 3).reshape(n * n_pos, n_layers, d)  # (rows*P, L, d)
        valid = index["valid"].reshape(-1).astype(bool)
        if not valid.all():
            samples = samples[valid]
        return samples

    def _resolve_layers(self, layers: list[int] | None) -> list[int]:
        return list(range(self.meta.n_layers)) if layers is None else [self.layer_index(x) for x in layers]

    def batches(
        self,
        batch_size: int,
        *,
        layers: list[int] | None = None,
        tokens: str = "all",
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        drop_last: bool = True,
        start_batch: int = 0,
        buffer_bytes: int = 256 * 2**20,
        chunk_bytes: int = 8 * 2**20,
    ) -> Iterator[torch.Tensor]:
        """One epoch of ``(batch, len(layers), d_model)`` tensors; see ActivationReader.batches.

        ``start_batch`` skips that many batches of the epoch (exact resume of training).
        """
        if batch_size < 1:
            raise StoreError(f"batch size must be >= 1, got {batch_size}")
        layer_ids = self._resolve_layers(layers)
        positions = self.positions(tokens)
        if self.n_examples == 0:
            raise StoreError(f"cache {self.path} holds no finished shards; run (or finish) `sae cache` first")
        out_dtype = dtype or torch.float32
        device = torch.device(device)
        sample_bytes = len(layer_ids) * self.meta.d_model * self._np_dtype.itemsize
        row_bytes = sample_bytes * len(positions)
        chunk_rows = max(1, chunk_bytes // max(row_bytes, 1))
        rng = np.random.default_rng([seed, epoch]) if shuffle else None
        chunks = plan_chunks(self.n_examples, chunk_rows, rng)
        per_window = max(1, buffer_bytes // max(chunk_rows * row_bytes, 1)) if shuffle else 1
        windows = group_windows(chunks, per_window)
        perm_gen = torch.Generator().manual_seed(int(rng.integers(2**62)) if rng is not None else 0)
        emitted = 0
        carry: torch.Tensor | None = None

        def emit(raw: torch.Tensor) -> torch.Tensor:
            out = raw.to(out_dtype)
            if device.type == "cuda":
                return out.pin_memory().to(device, non_blocking=True)
            return out

        with ThreadPoolExecutor(self.io_threads, thread_name_prefix="sae-store-read") as pool:
            pending: deque[Future[np.ndarray]] = deque()
            flat = [c for w in windows for c in w]
            next_submit = 0

            def top_up() -> None:
                nonlocal next_submit
                while next_submit < len(flat) and len(pending) < per_window + 2 * self.io_threads:
                    pending.append(pool.submit(self._load_samples, flat[next_submit], layer_ids, positions))
                    next_submit += 1

            for window in windows:
                top_up()
                parts = []
                for _ in window:
                    parts.append(raw_to_torch(pending.popleft().result(), self.meta.dtype))
                    top_up()
                if carry is not None and len(carry):
                    parts.insert(0, carry)
                data = parts[0] if len(parts) == 1 else torch.cat(parts)  # (m, L, d)
                m = len(data)
                full = m - m % batch_size
                if shuffle:
                    perm = torch.randperm(m, generator=perm_gen)
                    for lo in range(0, full, batch_size):
                        if emitted >= start_batch:
                            yield emit(data.index_select(0, perm[lo : lo + batch_size]))
                        emitted += 1
                    carry = data.index_select(0, perm[full:]) if full < m else None
                else:
                    for lo in range(0, full, batch_size):
                        if emitted >= start_batch:
                            yield emit(data[lo : lo + batch_size])
                        emitted += 1
                    carry = data[full:].clone() if full < m else None
            if carry is not None and len(carry) and not drop_last and emitted >= start_batch:
                yield emit(carry)

    def read_examples(
        self, start: int, stop: int, *, layers: list[int] | None = None, dtype: torch.dtype | None = torch.float32
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Rows ``[start, stop)`` in order: acts ``(n, L, T, d)`` and index records ``(n, T)``."""
        if not 0 <= start <= stop <= self.n_examples:
            raise StoreError(f"rows {start}:{stop} are outside cache {self.path} (0..{self.n_examples})")
        acts, index = self._read_rows(start, stop, self._resolve_layers(layers), None)
        t = raw_to_torch(acts, self.meta.dtype)
        return (t.to(dtype) if dtype is not None else t), index
