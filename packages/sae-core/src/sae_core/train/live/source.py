"""The live source: a running model's activations, read like a cache (the ActivationReader protocol).

``sae train --adapter A --model M --layers L --data DATASET`` trains on this instead of a cache,
through the very code paths a cache takes (banks, sweep groups, validation, ``torchrun`` data
parallelism with ``part=``): the trainer cannot tell the two apart.

How batches come about (the ``buffer`` plan of :class:`~sae_core.protocols.batch_plan.Mixing`):

- The dataset is cut into *windows* of ``E`` consecutive examples. Window ``w`` is computed by one
  call of the adapter, ``iter_batches(first (w+1)E examples, start=wE)``, in a background thread
  (``prefetch_windows`` ahead of training), so its activations are a function of the window
  alone: a resumed run recomputes exactly what the interrupted one trained on.
- A window's selected samples (the group's layer and token kind, valid tokens, the train side of
  the validation split) are kept in the storage dtype (what ``--also-cache`` stores: ``--dtype
  bfloat16`` halves the window's bytes), in CPU memory: the *mixing buffer*; each batch becomes
  fp32 as it is yielded (or on the device: the trainer asks a CUDA run for the half dtype, see
  :mod:`sae_core.train.transfer`), exactly as a cache in that dtype is read. After the previous window's remainder, they are permuted by
  ``default_rng([seed, epoch, w])`` and cut into batches
  (:class:`~sae_core.stores.batching.BufferMixer`); the remainder carries over. Sample ids are ``row * T + position``
  with rows counted from the dataset's start,
  as in a cache, and each batch is yielded in id order: a cached run with the same plan
  (``--mixing buffer``) on the cache ``--also-cache`` wrote gets the same batches, bit for bit.
- ``--also-cache ROOT`` hands every row to the store's writer as it is computed (the cache
  ``sae cache`` would write: same metadata, same address); rows of examples it already holds are
  skipped, a gap left by an interruption is recomputed first, and the cache is marked complete
  when a pass reaches the dataset's end (otherwise its rows are made durable, incomplete).
- Validation: the validation examples (whole examples, :mod:`sae_core.validation_split`) never enter the
  training stream; the model runs once, at the start, on the first of them, window by window,
  until ``val_tokens`` samples are collected, which are kept.
- The first windows, computed for the checks and the normalisation before training starts, are
  kept (at most :data:`MEMO_WINDOWS`) for the training stream, so the model does not run twice.
- Under ``torchrun`` each rank runs the model on its contiguous share of every window's examples;
  the window's samples are all-gathered (in the main thread, so the collectives keep their order)
  and every rank then follows the same plan and reads its slice of each batch (``part``), as
  from a cache. Equal to one process up to the float rounding of batched forwards (a rank's
  forward batches hold other examples).

The data position (window, batches of it consumed, rows before it, and the carried remainder's
ids and activations) is part of the training state (:meth:`LiveSource.stream_state`), so
``--resume`` recomputes the current window and continues where the run stopped.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_core.caching import normalize_dtype, open_source
from sae_core.datasets import DatasetHead
from sae_core.dist import Dist
from sae_core.errors import ConfigError, DataError, SAEError, StoreError
from sae_core.lock import DirLock
from sae_core.protocols.adapter import ActivationBatch
from sae_core.protocols.batch_plan import BatchPlan, Mixing
from sae_core.protocols.reader import ActivationReader
from sae_core.stores import open_writer
from sae_core.stores.batching import BufferMixer
from sae_core.train.live.options import DEFAULT_BUFFER_TOKENS, LiveConfig
from sae_core.train.live.views import SequentialView, SubsetView
from sae_core.validate import check_output_dir
from sae_core.validation_split import Selection

#: windows computed before training (size checks, normalisation) kept for the training stream
MEMO_WINDOWS = 2
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_END = object()


class _Stopped(Exception):
    """A window abandoned half-way: its stream was closed (nothing of it is kept)."""


@dataclass
class LocalWindow:
    """What this rank computed of window ``w``: the selected samples of its rows, in row order."""

    w: int
    n_rows: int  # rows this rank's examples gave (all of them, selected or not)
    rows: np.ndarray  # (m,) int64 row of each sample, counted within this rank's part
    pos: np.ndarray  # (m,) int64 position in the row (0..T-1)
    example: np.ndarray  # (m,) int64 dataset example id
    tpos: np.ndarray  # (m,) int64 position in the source example (text; the row position for images)
    x: torch.Tensor  # (m, d) in the storage dtype (float32, or --dtype's half dtype)
    index: np.ndarray | None = None  # end-to-end training: INDEX_DTYPE records (r, T) of the stream's rows


@dataclass
class Window:
    """Window ``w`` as every rank sees it: samples in id order (rows from the dataset's start)."""

    w: int
    n_rows: int
    row_offset: int
    gid: np.ndarray  # (m,) int64 global sample ids
    example: np.ndarray
    tpos: np.ndarray
    x: torch.Tensor  # (m, d) in the storage dtype
    index: np.ndarray | None = None  # end-to-end training: the rows' index records (r, T)


@dataclass
class _Pool:
    """Samples the plan draws from: the carried remainder, then the current window (kept apart:
    the window is not copied; ``take`` gathers from both)."""

    gid: np.ndarray
    example: np.ndarray
    tpos: np.ndarray
    x: torch.Tensor
    rest: _Pool | None = None  # the window, after these (the carry)

    @staticmethod
    def empty(d: int, dtype: torch.dtype) -> _Pool:
        z = np.empty(0, np.int64)
        return _Pool(z, z, z, torch.empty(0, d, dtype=dtype))

    def take(self, p: np.ndarray) -> _Pool:
        if self.rest is None:
            return _Pool(self.gid[p], self.example[p], self.tpos[p], self.x[torch.from_numpy(p)])
        nc = len(self.gid)
        mine = p < nc
        out = _Pool(np.empty(len(p), np.int64), np.empty(len(p), np.int64), np.empty(len(p), np.int64),
                    torch.empty(len(p), self.x.shape[1], dtype=self.x.dtype))
        for part, sel, q in ((self, mine, p[mine]), (self.rest, ~mine, p[~mine] - nc)):
            for name in ("gid", "example", "tpos"):
                getattr(out, name)[sel] = getattr(part, name)[q]
            out.x[torch.from_numpy(sel)] = part.x[torch.from_numpy(q)]
        return out

    @staticmethod
    def cat(a: _Pool, w: Window) -> _Pool:
        win = _Pool(w.gid, w.example, w.tpos, w.x)
        return win if not len(a.gid) else _Pool(a.gid, a.example, a.tpos, a.x, rest=win)


class _Producer:
    """A background thread computing windows ``ws`` in order into a bounded queue.

    The training stream (``main``) runs ``prefetch_windows`` windows ahead of the one being
    trained on; other streams (the size check's, the normalisation's: a few batches each, then
    closed) compute a window only when it is asked for, so nothing is computed that they drop.

    ``model_threads``: the thread sets torch's thread count for its own forwards. Measured (torch
    2.15, OpenMP backend, MKL): ``torch.set_num_threads`` sets the calling thread's OpenMP and MKL
    counts only — the training thread's ``torch.get_num_threads()`` (and ``mkl_get_max_threads``)
    stay as they were, before and after its own forward/backward — but it also becomes the count
    of threads started afterwards (which the trainer does not compute in).
    """

    def __init__(self, source: LiveSource, key: tuple[Any, ...], ws: range, main: bool) -> None:
        ahead = source.cfg.prefetch_windows if main else 0
        self.q: queue.Queue[Any] = queue.Queue(maxsize=max(1, ahead))
        self.wanted = threading.Semaphore(ahead)  # windows the producer may compute beyond those asked for
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(source, key, ws, main), daemon=True,
                                       name="sae-live-model")
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _wait_for_demand(self) -> bool:
        while not self.stop.is_set():
            if self.wanted.acquire(timeout=0.1):
                return True
        return False

    def _run(self, source: LiveSource, key: tuple[Any, ...], ws: range, main: bool) -> None:
        try:
            if source.cfg.model_threads is not None:
                torch.set_num_threads(source.cfg.model_threads)  # this thread's forwards only (see above)
            source._catch_up(key, ws.start, self.stop)
            for w in ws:
                if not self._wait_for_demand():
                    return
                local = source._local(key, w, main, stop=self.stop)
                if not self._put(local):
                    return
            self._put(_END)
        except _Stopped:
            return
        except BaseException as e:  # surfaced in the consumer
            self._put(e)

    def __iter__(self) -> Iterator[LocalWindow]:
        while True:
            self.wanted.release()  # the consumer asks for the next window
            item = self.q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stop.set()


class LiveSource(ActivationReader):
    """A model adapter running over a dataset, read through the ActivationReader protocol.

    ``train_seed``: the seed of the training stream (its position is what :meth:`stream_state`
    saves; other streams — the normalisation's, the checks' — only share the first windows).
    ``val_tokens``: validation samples to collect. ``probe_tokens``: how many samples
    :meth:`n_tokens` looks for (at least one batch). ``window_examples``: the buffer when a
    caller does not pass a :class:`Mixing`.
    """

    #: the trainer wraps readers with a Mixing; this source takes it as it is
    #: (see sae_core.stores.batching.with_mixing)
    live = True

    def __init__(self, cfg: LiveConfig, *, device: str = "cpu", dist: Dist | None = None, train_seed: int = 0,
                 val_tokens: int = 65_536, probe_tokens: int = 4096, window_examples: int | None = None,
                 progress: bool = False) -> None:

        self.cfg, self.dist = cfg, dist or Dist()
        if cfg.also_cache and self.dist.active:
            raise ConfigError("--also-cache writes the cache from one process; under torchrun cache with "
                              "`torchrun ... -m sae_core cache` instead, or train live without --also-cache")
        dtype = normalize_dtype(cfg.dtype)
        request = cfg.request(self.dist.device(device))
        self.adapter, dataset, meta = open_source(cfg.adapter, request, cfg.data, dict(cfg.data_options), dtype)
        self.meta = meta
        self.dataset = SequentialView(dataset)
        self.n_dataset = len(dataset)
        self.store_dtype = TORCH_DTYPES[dtype]
        self.train_seed, self.val_tokens, self.probe_tokens = train_seed, val_tokens, probe_tokens
        t = meta.tokens_per_example
        self.default_window = window_examples or max(1, math.ceil(DEFAULT_BUFFER_TOKENS / t))
        #: one window computed at a time (the dataset's sequential read, the writer, the memo) ...
        self._window_lock = threading.RLock()
        #: ... and one forward at a time: held per forward batch, so that end-to-end training's
        #: spliced forwards (which take it too) wait for a batch, not for a whole window
        self._lock = threading.RLock()
        self._memo: OrderedDict[tuple[Any, ...], LocalWindow] = OrderedDict()
        self._val: dict[tuple[Any, ...], list[Window]] = {}
        self._producers: list[_Producer] = []
        self._record: dict[str, Any] | None = None  # the training stream's current window
        self._restored: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None
        self._located: dict[int, tuple[int, int]] = {}
        self.rows_seen = 0
        #: end-to-end training: rows (token windows) handed out with each training batch, and the
        #: index records of the current batch's rows (see sae_core.train.live.e2e)
        self.e2e_rows = 0
        self.e2e_batch: np.ndarray | None = None
        self.model_rows = 0  # rows (images, text windows) the model computed
        self.model_tokens = 0  # valid tokens among them (padding and special tokens not counted)
        self.model_seconds = 0.0
        self.window_bytes = 0  # the largest window's samples (the mixing buffer's size)
        self.progress = progress and self.dist.is_main
        self._bar: Any = None  # the model's progress (tokens/s), under the trainer's
        self.writer: Any = None
        self._cache_lock: Any = None
        self._write_pos = 0
        self.path = Path(f"live:{meta.adapter}:{meta.model}")
        if cfg.also_cache:
            self._open_writer(Path(cfg.also_cache))

    def configure(self, config: Any) -> LiveSource:
        """Take the training seed, validation size and largest batch of a TrainConfig."""
        self.train_seed = config.train.seed
        self.val_tokens = config.train.val_tokens
        self.probe_tokens = max(s.data.batch_size for s in config.saes)
        self.e2e_rows = config.train.e2e_rows if config.train.e2e else 0
        return self

    # -- the also-cache ---------------------------------------------------------------------------
    def _open_writer(self, root: Path) -> None:

        check_output_dir(root, "--also-cache")
        if self.cfg.store == "local":
            self._cache_lock = DirLock(root / self.meta.fingerprint(), "cache",
                                       hint=", or pass another --also-cache root").acquire()
        self.writer = open_writer(root, self.meta, store=self.cfg.store)
        self.adapter.write_extras(self.writer.path)
        self.path = Path(self.writer.path)
        self._write_pos = self.writer.n_done

    @property
    def cache_path(self) -> Path | None:
        """The cache ``--also-cache`` writes (None without it)."""
        return Path(self.writer.path) if self.writer is not None else None

    def _write(self, batch: ActivationBatch, ex: np.ndarray, threshold: int) -> None:
        keep = ex >= threshold
        if not keep.any():
            return
        if not keep.all():
            k = torch.from_numpy(keep).to(batch.acts.device)
            batch = ActivationBatch(
                acts=batch.acts[k], example_ids=ex[keep],
                token_ids=None if batch.token_ids is None else batch.token_ids[keep],
                valid=None if batch.valid is None else np.asarray(batch.valid)[keep],
                positions=None if batch.positions is None else np.asarray(batch.positions)[keep])
        self.writer.write(batch)

    def _catch_up(self, key: tuple[Any, ...], w0: int, stop: threading.Event) -> None:
        """Rows the cache lacks before window ``w0`` (an interrupted run's unsaved shard): computed
        again, window by window as they were, and written (nothing is trained on them)."""
        if self.writer is None or self.writer.complete:
            return
        e = key[3]
        while self._write_pos < min(w0 * e, self.n_dataset) and not stop.is_set():
            self._local(key, self._write_pos // e, main=False, memo=False)

    # -- windows ------------------------------------------------------------------------------------
    def _bounds(self, w: int, e: int) -> tuple[int, int]:
        """This rank's examples ``[lo, hi)`` of window ``w`` (a contiguous share)."""
        lo, hi = w * e, min((w + 1) * e, self.n_dataset)
        if self.dist.active:
            cuts = np.linspace(lo, hi, self.dist.world + 1).round().astype(int)
            lo, hi = int(cuts[self.dist.rank]), int(cuts[self.dist.rank + 1])
        return lo, hi

    def _local(self, key: tuple[Any, ...], w: int, main: bool, memo: bool = True,
               stop: threading.Event | None = None) -> LocalWindow:
        """This rank's part of window ``w`` for stream ``key``: from the memo, else the model
        (abandoned half-way when ``stop`` is set, unless the also-cache is being written)."""
        with self._window_lock:
            mkey = (*key, w)
            if memo and mkey in self._memo:
                return self._memo.pop(mkey) if main else self._memo[mkey]
            local = self._compute(key, w, stop)
            if memo and not main and key[2] != "val":
                self._memo[mkey] = local
                while len(self._memo) > MEMO_WINDOWS:
                    self._memo.popitem(last=False)
            return local

    def _compute(self, key: tuple[Any, ...], w: int, stop: threading.Event | None = None) -> LocalWindow:
        """Run the adapter on this rank's examples of window ``w`` and keep the stream's samples.
        ``stop`` set: abandon the window between forward batches (not while writing the cache,
        whose rows must go in whole examples, in order: that window is finished)."""
        layer, tokens, side, e, select = key
        pos_ok = np.zeros(self.meta.tokens_per_example, dtype=bool)
        pos_ok[self.positions(tokens)] = True
        lo, hi = self._bounds(w, e)
        batches, subset = self._forwards(side, select, lo, hi)
        writing = subset is None and self.writer is not None and not self.writer.complete and hi > self._write_pos
        threshold = self._write_pos
        parts: list[tuple[np.ndarray, ...]] = []
        xs: list[torch.Tensor] = []
        kept_rows: list[np.ndarray] = []  # end-to-end training: the stream's rows
        n_rows = 0
        t0 = time.perf_counter()
        while True:
            with self._lock:  # the forward (and the dataset read) of one batch
                batch = next(batches, None)
            if batch is None:
                break
            if stop is not None and stop.is_set() and not writing:
                self.model_seconds += time.perf_counter() - t0
                raise _Stopped
            ex = np.asarray(batch.example_ids, dtype=np.int64).reshape(-1)
            if subset is not None:
                ex = subset[ex]
            if writing:
                self._write(batch, ex, threshold)
            valid = np.ones((len(ex), len(pos_ok)), bool) if batch.valid is None else np.asarray(batch.valid, bool)
            keep = valid & pos_ok[None, :]
            if select is not None and side != "val":
                keep &= select.rows(ex)[:, None]
            if self.e2e_rows and side != "val":
                index = batch.index_records()
                kept_rows.append(index[select.rows(ex)] if select is not None else index)
            cols, x = self._samples(batch, ex, keep, layer)
            parts.append((cols[0] + n_rows, *cols[1:]))
            xs.append(x)
            n_rows += len(ex)
            self._count(len(ex), int(valid.sum()))
        self.model_seconds += time.perf_counter() - t0
        if writing:
            self._write_pos = max(self._write_pos, hi)
            if hi >= self.n_dataset:  # the dataset's last window: the cache is whole
                self.writer.close()
        cols = [np.concatenate([p[i] for p in parts]) if parts else np.empty(0, np.int64) for i in range(4)]
        x = torch.cat(xs) if xs else torch.empty(0, self.meta.d_model, dtype=self.store_dtype)
        self.window_bytes = max(self.window_bytes, x.numel() * x.element_size())
        index = np.concatenate(kept_rows) if kept_rows else None
        return LocalWindow(w, n_rows, cols[0], cols[1], cols[2], cols[3], x, index)

    def _forwards(self, side: str, select: Selection | None, lo: int, hi: int) -> tuple[Iterator[Any], Any]:
        """The adapter's forward batches over this rank's examples ``[lo, hi)`` of a window, and
        (validation side) the dataset ids of the validation examples among them, which the
        batches' example ids index (None otherwise)."""

        kw = {"batch_size": self.cfg.model_batch_size, "num_workers": self.cfg.num_workers}
        if side != "val":
            return self.adapter.iter_batches(DatasetHead(self.dataset, hi), start=lo, **kw), None
        cand = np.arange(lo, hi, dtype=np.int64)
        subset = cand[select.rows(cand)]
        batches = self.adapter.iter_batches(SubsetView(self.dataset, subset), start=0, **kw)
        return (batches if len(subset) else iter(())), subset

    def _samples(self, batch: ActivationBatch, ex: np.ndarray, keep: np.ndarray,
                 layer: int) -> tuple[tuple[np.ndarray, ...], torch.Tensor]:
        """The kept samples of one forward batch: ``(row in the batch, position, example, position
        in the source example)`` and their activations ``(m, d)`` in the storage dtype, on the host."""
        r, c = np.nonzero(keep)
        acts = batch.acts[:, layer]  # (n, T, d)
        x = acts[torch.from_numpy(r).to(acts.device), torch.from_numpy(c).to(acts.device)]
        tpos = c if batch.positions is None else np.asarray(batch.positions)[r, c]
        cols = (r.astype(np.int64), c.astype(np.int64), ex[r], np.asarray(tpos, np.int64))
        return cols, x.detach().to(self.store_dtype).to("cpu")

    def _count(self, n_rows: int, n_valid: int) -> None:
        """Count one forward batch's rows and valid tokens (and show them, with ``progress``)."""
        self.model_rows += n_rows
        self.model_tokens += n_valid
        if self.progress:
            if self._bar is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(unit="tok", unit_scale=True, desc=f"model ({self.meta.adapter})", position=1,
                                 leave=False, dynamic_ncols=True, smoothing=0.05)
            self._bar.update(n_valid)

    def _assemble(self, local: LocalWindow, row_offset: int) -> Window:
        """Every rank's part of the window, in rank (= example) order; a collective under torchrun."""
        t = self.meta.tokens_per_example
        if not self.dist.active:
            gid = (row_offset + local.rows) * t + local.pos
            return Window(local.w, local.n_rows, row_offset, gid, local.example, local.tpos, local.x, local.index)
        parts = self.dist.all_gather_object((local.n_rows, local.rows, local.pos, local.example, local.tpos,
                                             local.index))
        sizes = [len(p[1]) for p in parts]
        dev = torch.device("cuda", torch.cuda.current_device()) if self.dist.backend == "nccl" else torch.device("cpu")
        pad = torch.zeros(max(max(sizes), 1), self.meta.d_model, device=dev)  # fp32: any backend gathers it
        pad[: len(local.x)] = local.x.to(dev)
        got = [torch.empty_like(pad) for _ in parts]
        torch.distributed.all_gather(got, pad)
        offsets = np.cumsum([0] + [p[0] for p in parts])
        gid = np.concatenate([(row_offset + offsets[r] + p[1]) * t + p[2] for r, p in enumerate(parts)])
        indexes = [p[5] for p in parts if p[5] is not None]
        return Window(local.w, int(offsets[-1]), row_offset, gid, np.concatenate([p[3] for p in parts]),
                      np.concatenate([p[4] for p in parts]),
                      torch.cat([g[:s].cpu() for g, s in zip(got, sizes, strict=True)]).to(self.store_dtype),
                      np.concatenate(indexes) if indexes else None)

    def _windows(self, key: tuple[Any, ...], w0: int, row_offset: int, main: bool) -> Iterator[Window]:
        """Windows ``w0, w0 + 1, ...`` of one pass over the dataset, computed ahead in a thread."""
        n_windows = math.ceil(self.n_dataset / key[3])
        producer = _Producer(self, key, range(w0, n_windows), main)
        self._producers.append(producer)
        try:
            for local in producer:
                win = self._assemble(local, row_offset)
                row_offset += win.n_rows
                self.rows_seen = max(self.rows_seen, row_offset)
                yield win
        finally:
            producer.close()
            self._producers.remove(producer)

    def _val_windows(self, key: tuple[Any, ...]) -> list[Window]:
        """The validation samples: the first validation examples' windows, up to ``val_tokens``."""
        if key not in self._val:
            wins, have, row_offset = [], 0, 0
            for w in range(math.ceil(self.n_dataset / key[3])):
                win = self._assemble(self._local(key, w, main=False, memo=False), row_offset)
                row_offset += win.n_rows
                if len(win.gid):
                    wins.append(win)
                    have += len(win.gid)
                if have >= self.val_tokens:
                    break
            self._val[key] = wins
        return self._val[key]

    def _key(self, layers: list[int | str] | None, tokens: str, select: Selection | None,
             mixing: Mixing | None) -> tuple[Any, ...]:
        if mixing is not None and not mixing.buffered:
            raise ConfigError("live training mixes samples in a buffer (mixing = \"buffer\"); the store's shuffle "
                              "needs a cache")
        e = mixing.window_examples if mixing is not None else self.default_window
        if layers is not None and len(layers) != 1:
            raise SAEError(f"a live source reads one layer per stream, got {layers}")
        layer = self.layer_index(layers[0] if layers is not None else 0)
        self.positions(tokens)
        if select is None or select.side == "all" or not select.split.active:
            return (layer, tokens, "all", e, None)
        return (layer, tokens, select.side, e, select)

    # -- the protocol ---------------------------------------------------------------------------------
    @property
    def n_examples(self) -> int:
        """Rows the model has produced so far (the live source grows as it runs)."""
        return self.rows_seen

    def read_examples(self, start: int, stop: int, *, layers: list[int] | None = None) -> tuple[torch.Tensor, np.ndarray]:
        raise StoreError("a live source cannot read rows back; train with --also-cache DIR and analyse that cache")

    def n_tokens(self, tokens: str = "all", *, select: Selection | None = None, mixing: Mixing | None = None) -> int:
        """Validation side: the samples collected for validation. Otherwise a lower bound: the
        samples of the first windows, computed until ``probe_tokens`` (kept for training)."""
        key = self._key(None, tokens, select, mixing)
        if key[2] == "val":
            return sum(len(w.gid) for w in self._val_windows(key))
        have = 0
        windows = self._windows(key, 0, 0, main=False)
        try:
            for win in windows:
                have += len(win.gid)
                if have >= self.probe_tokens:
                    break
        finally:
            windows.close()
        return have

    def _plan(self, plan: BatchPlan) -> Iterator[_Pool]:
        """The batches of one epoch (samples in id order), from ``plan.start_batch`` on."""
        key = self._key(plan.layers, plan.tokens, plan.select, plan.mixing)
        seed, epoch = plan.seed, plan.epoch
        if key[2] == "val":
            windows: Iterator[Window] = iter(self._val_windows(key))
            main, counter, carry = False, 0, _Pool.empty(self.meta.d_model, self.store_dtype)
        else:
            main = seed == self.train_seed
            w0, row0, counter, carry = self._resume_point(plan, key)
            windows = self._windows(key, w0, row0, main)
        mixer = BufferMixer(plan.batch_size, seed=seed, epoch=epoch, shuffle=plan.shuffle, carry=carry.gid)
        try:
            for win in windows:
                if not len(win.gid):
                    continue
                if main:
                    self._record = {"seed": seed, "epoch": epoch, "window": win.w, "batch_start": counter,
                                    "row_offset": win.row_offset, "window_examples": key[3], "tokens": plan.tokens,
                                    "layer": key[0], "carry": carry}
                pool_ids, batches = mixer.add(win.w, win.gid)
                pool = _Pool.cat(carry, win)
                rows = self._e2e_order(win, seed, epoch) if main else None
                for j, b in enumerate(batches):
                    if counter >= plan.start_batch:
                        if rows is not None:  # the token windows end-to-end training runs with this batch
                            self.e2e_batch = win.index[rows[(np.arange(self.e2e_rows) + j * self.e2e_rows) % len(rows)]]
                        yield pool.take(b[np.argsort(pool_ids[b], kind="stable")])
                    counter += 1
                carry = pool.take(mixer.carry_positions)
        finally:
            if hasattr(windows, "close"):
                windows.close()
        if not plan.drop_last and len(carry.gid):
            yield carry.take(np.argsort(carry.gid, kind="stable"))
        elif counter == 0 and key[2] != "val":
            raise DataError(f"dataset {self.cfg.data!r} gives fewer than one batch ({plan.batch_size}) of "
                            f"{plan.tokens!r} training samples; lower --batch-size or use more data")

    def _resume_point(self, plan: BatchPlan, key: tuple[Any, ...]) -> tuple[int, int, int, _Pool]:
        """Where the training stream starts: ``(window, rows before it, batches before it, carry)``;
        the restored state's when it is this epoch's and not past ``plan.start_batch``."""
        if self._restored is not None:
            doc, tensors = self._restored
            if (doc["seed"], doc["epoch"], doc["window_examples"], doc["tokens"], doc["layer"]) == \
                    (plan.seed, plan.epoch, key[3], plan.tokens, key[0]) and doc["batch_start"] <= plan.start_batch:
                carry = _Pool(tensors["carry_gid"].numpy(), tensors["carry_example"].numpy(),
                              tensors["carry_tpos"].numpy(), tensors["carry_x"].to(self.store_dtype))
                return int(doc["window"]), int(doc["row_offset"]), int(doc["batch_start"]), carry
        return 0, 0, 0, _Pool.empty(self.meta.d_model, self.store_dtype)

    def _e2e_order(self, win: Window, seed: int, epoch: int) -> np.ndarray | None:
        """The order in which a window's rows go to end-to-end training (``e2e_rows`` per batch,
        cycling): seeded by ``(seed, epoch, window)``, so a resumed run hands out the same rows."""
        if not self.e2e_rows or win.index is None or not len(win.index):
            return None
        return np.random.default_rng([seed, epoch, win.w, 1]).permutation(len(win.index))

    def batches(self, plan: BatchPlan) -> Iterator[torch.Tensor]:
        """One epoch of ``(batch, 1, d_model)`` tensors, as :meth:`ActivationReader.batches`
        (the ``buffer`` plan; ``plan.part=(rank, world)``: this rank's slice of each batch)."""
        rank, world = plan.part
        for pool in self._plan(plan):
            x = pool.x
            if world > 1:
                x = x[torch.from_numpy(np.array_split(np.arange(len(x)), world)[rank])]
            # (b, 1, d): a half window becomes fp32 here, batch by batch (a CUDA run asks for the
            # half dtype, plan.dtype, and converts on the device) — exact: the values were rounded
            yield x[:, None].to(device=plan.device, dtype=plan.dtype or torch.float32)

    def batch_sample_ids(self, plan: BatchPlan, batch: int) -> np.ndarray:
        """Sorted sample ids of one batch (replays the stream: for error reports only)."""
        stream = self._plan(dataclasses.replace(plan, start_batch=batch))
        try:
            pool = next(stream)
        except StopIteration:
            raise StoreError(f"epoch {plan.epoch} of the live stream has no batch {batch} of size "
                             f"{plan.batch_size}") from None
        finally:
            stream.close()
        self._located = {int(g): (int(e), int(p)) for g, e, p in zip(pool.gid, pool.example, pool.tpos, strict=True)}
        return pool.gid

    def sample_source(self, sample_id: int) -> dict[str, Any]:
        row, _ = divmod(int(sample_id), self.meta.tokens_per_example)
        example, position = self._located.get(int(sample_id), (-1, -1))
        return {"shard": None, "row": row, "example": example, "position": position}

    def verify(self, progress: bool = False) -> dict[str, Any]:
        raise StoreError("a live source has nothing stored to verify")

    # -- training state -----------------------------------------------------------------------------
    def stream_state(self, *, seed: int, epoch: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """Where the training stream is: JSON scalars and the carried samples (for the state)."""
        rec = self._record
        if rec is None or rec["seed"] != seed or rec["epoch"] != epoch:
            return None
        carry: _Pool = rec["carry"]
        doc = {k: v for k, v in rec.items() if k != "carry"}
        tensors = {"carry_gid": torch.from_numpy(np.ascontiguousarray(carry.gid, dtype=np.int64)),
                   "carry_example": torch.from_numpy(np.ascontiguousarray(carry.example, dtype=np.int64)),
                   "carry_tpos": torch.from_numpy(np.ascontiguousarray(carry.tpos, dtype=np.int64)),
                   "carry_x": carry.x.contiguous()}
        return doc, tensors

    def restore_stream_state(self, doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self._restored = (dict(doc), dict(tensors))

    # -- end ------------------------------------------------------------------------------------------
    def throughput(self) -> float | None:
        """Valid tokens per second of the model's windows so far (None before it ran)."""
        return self.model_tokens / self.model_seconds if self.model_seconds > 0 else None

    def close(self) -> None:
        """Stop the model threads; make the also-cache's rows durable (complete if a pass ended)."""
        for p in list(self._producers):
            p.close()
        with self._window_lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if self.writer is not None and not self.writer.complete:
                self.writer.sync()
            if self._cache_lock is not None:
                self._cache_lock.release()
                self._cache_lock = None
