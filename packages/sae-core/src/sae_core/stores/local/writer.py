"""Crash-safe, resumable writer of the local sharded store.

Rows (examples or text windows) accumulate in memory until a shard is full. A shard is written
under temporary names, fsynced and renamed, and only then recorded in ``shards.json`` — so after a
crash every shard listed there is complete, and anything else is a leftover that is deleted.
Shards are cut at *example boundaries* (all windows of one text document stay in one shard), so the
resume position is simply "the example after the last one in a finished shard". Shards are written
by a background thread so that model forwards overlap with disk I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.errors import ParallelCacheInProgress, StoreError
from sae_core.protocols.adapter import ActivationBatch
from sae_core.protocols.store import INDEX_DTYPE, ActivationWriter, CacheMetadata
from sae_core.stores.local import format as fmt

TARGET_SHARD_BYTES = 256 * 2**20


def to_storage(acts: Any, dtype: str) -> np.ndarray:
    """Tensor/array ``(batch, L, T, d)`` -> contiguous numpy array in the store's raw dtype."""
    import torch  # lazy: loads torch

    if isinstance(acts, np.ndarray):
        acts = torch.from_numpy(acts)
    acts = acts.detach()
    converted = acts.to("cpu", getattr(torch, dtype)).contiguous()
    if converted.data_ptr() == acts.data_ptr():
        converted = converted.clone()  # shards are written later, by a thread: never alias the caller's buffer
    if dtype == "bfloat16":
        return converted.view(torch.int16).numpy().view(np.uint16)
    return converted.numpy()


def ensure_metadata(path: Path, meta: CacheMetadata) -> bool:
    """Create ``metadata.json`` or check that the one there describes ``meta``; complete or not."""
    meta_path = path / fmt.METADATA
    if not meta_path.exists():
        fmt.write_json_atomic(meta_path, dataclasses.asdict(meta))
        return False
    existing = fmt.read_json(meta_path, "cache metadata")
    mine = meta.identity()
    theirs = {k: existing.get(k) for k in mine}
    if theirs != mine:
        diff = sorted(k for k in mine if theirs.get(k) != mine[k])
        raise StoreError(
            f"{path} already holds a different cache (fields differ: {', '.join(diff)}); "
            "use another --out root or delete that directory"
        )
    return bool(existing.get("complete"))


def write_metadata(path: Path, meta: CacheMetadata, *, complete: bool, n_rows: int) -> None:
    doc = dataclasses.asdict(meta)
    doc["complete"] = complete
    doc["n_examples"] = n_rows if complete else None
    fmt.write_json_atomic(path / fmt.METADATA, doc)


def verified_shards(path: Path, meta: CacheMetadata, shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The listed shards up to the first one that is missing or truncated (disk trouble)."""
    row_bytes = meta.n_layers * meta.tokens_per_example * meta.d_model * fmt.np_dtype(meta.dtype).itemsize
    good = []
    for shard in shards:
        acts, index = path / shard["file"], path / shard["index_file"]
        n = int(shard["n_examples"])
        if not (
            acts.exists()
            and acts.stat().st_size == n * row_bytes
            and index.exists()
            and index.stat().st_size == n * meta.tokens_per_example * INDEX_DTYPE.itemsize
        ):
            break
        good.append(shard)
    return good


class LocalWriter(ActivationWriter):
    """Writes one cache directory ``<root>/<meta.fingerprint()>``, or one block of it.

    ``block=b``: several ranks (``torchrun ... -m sae_core cache``) write one cache together, each
    a contiguous block of examples fixed in ``blocks/plan.json`` (see :mod:`.parallel`). A block
    writer lists its shards (``acts-bNNNNN-*.bin``) in ``blocks/block-NNNNN.json`` with the same
    temp-fsync-rename discipline; rank 0 merges the finished blocks into ``shards.json``.
    """

    def __init__(
        self, root: str | Path, meta: CacheMetadata, *, shard_examples: int | None = None, block: int | None = None
    ) -> None:
        self.meta = meta
        self.path = Path(root) / meta.fingerprint()
        self.block = block
        self._np_dtype = fmt.np_dtype(meta.dtype)
        row_bytes = meta.n_layers * meta.tokens_per_example * meta.d_model * self._np_dtype.itemsize
        self.shard_rows = int(shard_examples or max(1, TARGET_SHARD_BYTES // max(row_bytes, 1)))
        if self.shard_rows < 1:
            raise StoreError(f"shard_examples must be >= 1, got {shard_examples}")
        self.path.mkdir(parents=True, exist_ok=True)
        self._first_example = 0
        if block is None:
            self._open_or_create()
        else:
            self._open_block(block)
        self._acts: list[np.ndarray] = []
        self._index: list[np.ndarray] = []
        self._buffered = 0
        self._queue: queue.Queue[tuple[np.ndarray, np.ndarray] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- opening / resuming -------------------------------------------------------------------
    def _open_or_create(self) -> None:
        self._complete = ensure_metadata(self.path, self.meta)
        if not self._complete and (self.path / fmt.BLOCKS / fmt.PLAN).exists():
            raise ParallelCacheInProgress(
                f"{self.path} is being written by several torchrun ranks; finish it the same way: "
                "`torchrun --nproc-per-node N -m sae_core cache ...` with the same arguments (any N, 1 too)"
            )
        for leftover in self.path.glob("*" + fmt.TMP_SUFFIX):
            leftover.unlink()
        self._list_path = self.path / fmt.SHARDS
        doc = fmt.read_json(self._list_path, "shard list") if self._list_path.exists() else {"shards": []}
        # a recorded shard that is missing or truncated is dropped with all later ones, and rewritten
        self.shards = verified_shards(self.path, self.meta, list(doc.get("shards", [])))
        if len(self.shards) != len(doc.get("shards", [])):
            self._complete = False
            self._save_shards()
        if not self._complete:
            self._set_complete(False)

    def _open_block(self, block: int) -> None:
        plan = fmt.read_json(self.path / fmt.BLOCKS / fmt.PLAN, "parallel cache plan")
        if not 0 <= block < len(plan["blocks"]):
            raise StoreError(f"block {block} is not in the plan of {self.path} ({len(plan['blocks'])} blocks)")
        self._first_example, self._stop_example = (int(v) for v in plan["blocks"][block])
        # only this block's leftovers: other ranks' temporary files are in flight
        for leftover in (*self.path.glob(f"*-{fmt.block_tag(block)}-*{fmt.TMP_SUFFIX}"),
                         self.path / fmt.BLOCKS / (fmt.block_list_name(block) + fmt.TMP_SUFFIX)):
            leftover.unlink(missing_ok=True)
        self._list_path = self.path / fmt.BLOCKS / fmt.block_list_name(block)
        doc = fmt.read_json(self._list_path, "block shard list") if self._list_path.exists() else {"shards": []}
        self.shards = verified_shards(self.path, self.meta, list(doc.get("shards", [])))
        self._complete = bool(doc.get("complete")) and len(self.shards) == len(doc.get("shards", []))
        if len(self.shards) != len(doc.get("shards", [])):
            self._save_shards()

    @property
    def n_rows(self) -> int:
        """Rows durably written (text windows or images)."""
        return sum(int(s["n_examples"]) for s in self.shards)

    @property
    def n_done(self) -> int:
        """Dataset example to resume from: one past the last example of a finished shard."""
        if not self.shards:
            return self._first_example
        return int(self.shards[-1]["last_example"]) + 1

    @property
    def complete(self) -> bool:
        return self._complete

    # -- writing ------------------------------------------------------------------------------
    def write(self, batch: ActivationBatch) -> None:
        self._raise_thread_error()
        if self._complete:
            raise StoreError(f"{self.path} is already complete; nothing more can be written to it")
        acts = to_storage(batch.acts, self.meta.dtype)
        m = self.meta
        expected = (m.n_layers, m.tokens_per_example, m.d_model)
        if acts.ndim != 4 or acts.shape[1:] != expected:
            raise StoreError(
                f"adapter produced activations of shape {tuple(acts.shape)}, but the cache expects "
                f"(batch, {m.n_layers}, {m.tokens_per_example}, {m.d_model}) from its metadata; "
                "the adapter's spec() and iter_batches() disagree"
            )
        n = acts.shape[0]
        ids = np.asarray(batch.example_ids, dtype=np.int64).reshape(-1)
        if len(ids) != n:
            raise StoreError(f"batch has {n} rows but {len(ids)} example ids")
        index = batch.index_records()  # (n, t)
        self._acts.append(acts)
        self._index.append(index)
        self._buffered += n
        while self._buffered > self.shard_rows:
            if not self._flush(final=False):
                break

    def _flush(self, *, final: bool) -> bool:
        """Hand a full shard (or, when ``final``, the rest) to the writer thread."""
        acts = np.concatenate(self._acts) if len(self._acts) > 1 else self._acts[0]
        index = np.concatenate(self._index) if len(self._index) > 1 else self._index[0]
        cut = len(acts) if final else self._cut_point(index["example"][:, 0])
        if cut == 0:
            return False
        self._acts = [acts[cut:]] if cut < len(acts) else []
        self._index = [index[cut:]] if cut < len(index) else []
        self._buffered = len(acts) - cut
        self._enqueue(acts[:cut], index[:cut])
        return True

    def _cut_point(self, ex: np.ndarray) -> int:
        """Rows to flush now: the first example boundary at or after ``shard_rows``.

        A pure function of the data (not of how it was batched), so an interrupted and resumed
        write cuts exactly the same shards as an uninterrupted one. 0 means "not known yet".
        """
        n = self.shard_rows
        if len(ex) <= n:
            return 0
        boundaries = np.flatnonzero(ex[n:] != ex[n - 1 : -1])
        return int(boundaries[0]) + n if len(boundaries) else 0

    def _enqueue(self, acts: np.ndarray, index: np.ndarray) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name="sae-store-writer", daemon=True)
            self._thread.start()
        self._queue.put((acts, index))
        self._raise_thread_error()

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue
            try:
                self._write_shard(*item)
            except BaseException as e:  # surfaced to the caller on the next write/close
                self._error = e

    def _write_shard(self, acts: np.ndarray, index: np.ndarray) -> None:
        i = len(self.shards)
        acts_file, index_file = fmt.acts_name(i, self.block), fmt.index_name(i, self.block)
        acts_bytes = memoryview(np.ascontiguousarray(acts)).cast("B")
        index_bytes = memoryview(np.ascontiguousarray(index)).cast("B")
        fmt.write_bytes_atomic(self.path / acts_file, [acts_bytes])
        fmt.write_bytes_atomic(self.path / index_file, [index_bytes])
        fmt.fsync_dir(self.path)
        valid = index["valid"].astype(bool)
        self.shards.append(
            {
                "file": acts_file,
                "index_file": index_file,
                "first_row": self.n_rows,
                "first_example": int(index["example"][0, 0]),
                "last_example": int(index["example"][-1, 0]),
                "n_examples": len(acts),
                "nbytes": int(acts.nbytes),
                # checked by `sae info --verify` (and, for small caches, by readers on open)
                "sha256": hashlib.sha256(acts_bytes).hexdigest(),
                "index_sha256": hashlib.sha256(index_bytes).hexdigest(),
                "valid_per_position": valid.sum(axis=0).astype(int).tolist(),
            }
        )
        self._save_shards()

    def _save_shards(self) -> None:
        doc: dict[str, Any] = {"shard_rows": self.shard_rows, "shards": self.shards}
        if self.block is not None:
            doc |= {"block": self.block, "first_example": self._first_example,
                    "stop_example": self._stop_example, "complete": self._complete}
        fmt.write_json_atomic(self._list_path, doc)

    def _raise_thread_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            if isinstance(err, OSError):
                raise StoreError(f"writing shard to {self.path} failed: {err}; free disk space and re-run to resume") from err
            raise err

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
            self._queue = queue.Queue(maxsize=2)
        self._raise_thread_error()

    def _set_complete(self, complete: bool) -> None:
        write_metadata(self.path, self.meta, complete=complete, n_rows=self.n_rows)
        self._complete = complete

    def sync(self) -> None:
        """Write the buffered rows as a (short) shard and wait for the writer thread; the cache
        stays incomplete and a later writer continues after them."""
        if self._complete:
            return
        if self._buffered:
            self._flush(final=True)
        self._drain()

    def close(self) -> Path:
        """Flush the remaining rows and mark the cache (or this block) complete."""
        if self._complete:
            self._drain()
            return self.path
        if self._buffered:
            self._flush(final=True)
        self._drain()
        if self.block is not None:  # an empty block is fine (its examples were all unreadable)
            self._complete = True
            self._save_shards()
            return self.path
        if not self.shards:
            raise StoreError(f"no activations were written to {self.path}; the dataset produced no examples")
        self._set_complete(True)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Stop the writer thread without marking the cache complete (finished shards stay)."""
        self._acts, self._index, self._buffered = [], [], 0
        self._drain()
