"""``sae cache``: run a model adapter over a dataset and write an activation store.

Resumable by construction: the store's directory is content-addressed by what is cached, the
writer reports how many examples are durably written (``n_done``) and the adapter restarts the
dataset there, so an interrupted run continues instead of starting over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from sae_core.datasets import DatasetHead, open_dataset
from sae_core.dist import Dist
from sae_core.errors import ParallelCacheInProgress, SAEError
from sae_core.io import append_line
from sae_core.lock import DirLock
from sae_core.plugin_calls import guarded, guarded_iter, returned
from sae_core.protocols.adapter import ActivationBatch, ActivationSpec, AdapterRequest, ModelAdapter
from sae_core.protocols.geometry import ImageGeometry
from sae_core.protocols.store import CacheMetadata
from sae_core.stores import open_writer
from sae_core.validate import check_device, check_input_file, check_output_dir, check_positive

DTYPE_ALIASES = {
    "fp32": "float32",
    "float32": "float32",
    "f32": "float32",
    "fp16": "float16",
    "float16": "float16",
    "f16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}


def normalize_dtype(dtype: str) -> str:
    """Canonical store dtype name for a user spelling (``bf16`` -> ``bfloat16``)."""
    try:
        return DTYPE_ALIASES[dtype.lower()]
    except KeyError:
        raise SAEError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16") from None


def build_adapter(adapter: str, request: AdapterRequest) -> ModelAdapter:
    """Instantiate the adapter plugin ``adapter`` (unknown names list the installed ones)."""
    from sae_core.plugins import get_component  # lazy: loads pluggy

    component = get_component("adapter", adapter)
    with guarded("adapter", adapter, "building it", "the adapter built from an AdapterRequest (model, layers, options)"):
        return component.build(request)


def run_cache(
    adapter: str,
    request: AdapterRequest,
    data: str,
    out: Path,
    *,
    dtype: str = "float32",
    batch_size: int = 64,
    num_workers: int = 0,
    data_options: dict[str, Any] | None = None,
    max_examples: int | None = None,
    store: str = "local",
    shard_examples: int | None = None,
    progress: bool = True,
    dist: Dist | None = None,
) -> Path:
    """Cache activations of ``adapter`` on dataset ``data`` under store root ``out``.

    Returns the cache directory. Re-running with the same arguments resumes an interrupted cache
    or returns the finished one immediately. Options are validated before the model loads; the
    cache directory is locked while it is written (a concurrent second writer gets an error).
    ``dist`` (under torchrun): the ranks split the dataset into blocks and write disjoint shards
    of the same cache.
    """
    from sae_core.plugins import get_component  # lazy: loads pluggy

    # every option is checked before the model loads (which can take minutes)
    dtype = _check_options(request, out, dtype=dtype, batch_size=batch_size, num_workers=num_workers,
                           max_examples=max_examples, shard_examples=shard_examples)
    get_component("store", store)  # unknown store names list the installed ones
    dist = dist or Dist()
    if dist.active:  # each rank on its own GPU
        request = dataclasses.replace(request, device=dist.device(request.device))
    options = dict(data_options or {})
    if max_examples is not None:
        options["limit"] = max_examples
    model_adapter, dataset, meta = open_source(adapter, request, data, options, dtype)
    n_total = len(dataset)
    writer_opts: dict[str, Any] = {}
    if shard_examples is not None:
        writer_opts["shard_examples"] = shard_examples
    # one writer per cache: a second `sae cache` of the same thing fails instead of racing it
    lock = DirLock(Path(out) / meta.fingerprint(), "cache", hint=", or cache into another --out root")
    with lock.collective(dist) if store == "local" else contextlib.nullcontext():
        path = _write(model_adapter, dataset, meta, out, store, writer_opts, dist, n_total,
                      batch_size=batch_size, num_workers=num_workers, progress=progress, request=request)
    if dataset.skipped and dist.is_main:
        print(f"warning: {dataset.skipped} example(s) of {data!r} could not be read and were skipped "
              f"(counted in {path / 'cache_runs.jsonl'})", file=sys.stderr)
    return path


def open_source(adapter: str, request: AdapterRequest, data: str, options: dict[str, Any],
                dtype: str) -> tuple[ModelAdapter, Any, CacheMetadata]:
    """The adapter, the dataset and the metadata of the cache that ``sae cache`` would write (and
    that ``sae train --adapter`` trains on live): the same function, so both address the same
    cache. ``options`` are the dataset's (``limit`` for --max-examples); ``dtype`` canonical."""
    from sae_core.plugins import get_component  # lazy: loads pluggy

    # the dataset opens first when the adapter's modality is registered: a bad --data fails in
    # a second, not after loading the model
    modality = get_component("adapter", adapter).attrs.get("modality")
    dataset = open_dataset(data, modality, **options) if modality else None
    model_adapter = build_adapter(adapter, request)
    if dataset is None or model_adapter.modality != modality:
        dataset = open_dataset(data, model_adapter.modality, **options)
    if len(dataset) == 0:
        raise SAEError(f"dataset {data!r} has no examples; point --data at a non-empty source")

    with guarded("adapter", adapter, "spec()", "an ActivationSpec"):
        spec = returned(model_adapter.spec(), ActivationSpec, "adapter", adapter, "spec()", "an ActivationSpec")
    _check_spec(spec)
    meta = CacheMetadata(
        adapter=spec.adapter,
        model=spec.model,
        layers=list(spec.layers),
        d_model=spec.d_model,
        dtype=dtype,
        tokens_per_example=spec.tokens_per_example,
        token_kinds=list(spec.token_kinds),
        dataset={
            **dataset.describe(),
            "spec": data,
            "options": {k: v for k, v in options.items() if v is not None},
            "fingerprint": dataset.fingerprint(),
        },
        extra=dict(spec.extra),
    )
    return model_adapter, dataset, meta


def _check_spec(spec: Any) -> None:
    """An adapter's spec must be consistent before anything is written: one token kind per
    position, and image geometry (if any) the viewer can use (see ImageGeometry)."""

    if len(spec.token_kinds) != spec.tokens_per_example:
        raise SAEError(f"adapter {spec.adapter!r} declares {spec.tokens_per_example} tokens per example but "
                       f"{len(spec.token_kinds)} token kinds; its spec() must give one kind per position")
    if ImageGeometry.present(spec.extra):
        try:
            ImageGeometry.from_extra(spec.extra, n_patches=spec.token_kinds.count("patch"))
        except SAEError as e:
            raise SAEError(f"adapter {spec.adapter!r}: {e}") from None


def _check_options(request: AdapterRequest, out: Path, *, dtype: str, batch_size: int, num_workers: int,
                   max_examples: int | None, shard_examples: int | None) -> str:
    """Validate what can be validated without the model; returns the canonical dtype."""

    check_positive(batch_size, "--batch-size")
    check_positive(max_examples, "--max-examples")
    check_positive(shard_examples, "--shard-examples")
    check_positive(num_workers, "--num-workers", minimum=0)
    check_positive(request.context_size, "--context-size")
    dtype = normalize_dtype(dtype)
    check_device(request.device)
    check_output_dir(out)
    if request.checkpoint is not None:
        check_input_file(request.checkpoint, "--checkpoint")
    return dtype


def _write(model_adapter: ModelAdapter, dataset: Any, meta: CacheMetadata, out: Path, store: str,
           writer_opts: dict[str, Any], dist: Dist, n_total: int, *, batch_size: int, num_workers: int,
           progress: bool, request: AdapterRequest) -> Path:
    """Write (or finish) the cache of ``meta`` under ``out``, holding its lock."""
    if dist.active:
        return _cache_blocks(model_adapter, dataset, meta, out, store, writer_opts, dist,
                             batch_size=batch_size, num_workers=num_workers, progress=progress, request=request)

    try:
        writer = open_writer(out, meta, store=store, **writer_opts)
    except ParallelCacheInProgress:  # started by torchrun ranks: finish it block by block, alone
        return _cache_blocks(model_adapter, dataset, meta, out, store, writer_opts, dist,
                             batch_size=batch_size, num_workers=num_workers, progress=progress, request=request)
    model_adapter.write_extras(writer.path)
    start = writer.n_done
    if start >= n_total:
        return writer.close()
    bar = _progress(n_total, start, progress, unit=meta.extra.get("example_unit", "ex"))
    t0 = time.perf_counter()
    try:
        _fill(writer, model_adapter, dataset, start, bar, batch_size=batch_size, num_workers=num_workers, store=store)
    finally:
        if bar is not None:
            bar.close()
    path = writer.close()
    elapsed = time.perf_counter() - t0
    _write_run_log(path, n_total - start, elapsed, dataset.skipped, batch_size, num_workers, request)
    return path


def _fill(writer: Any, adapter: ModelAdapter, dataset: Any, start: int, bar: Any, *, batch_size: int,
          num_workers: int, store: str = "local") -> None:
    """Write the adapter's activations of ``dataset[start:]``, advancing ``bar`` in examples."""

    done = start
    name, expected = adapter.name, "ActivationBatch(acts=(batch, n_layers, tokens, d_model), example_ids=(batch,))"
    batches = adapter.iter_batches(dataset, start=start, batch_size=batch_size, num_workers=num_workers)
    for batch in guarded_iter(batches, "adapter", name, "iter_batches", expected):
        returned(batch, ActivationBatch, "adapter", name, "iter_batches", expected)
        with guarded("store", store, "its writer's write(batch)"):
            writer.write(batch)
        if bar is not None and len(batch.example_ids):
            # progress in dataset examples (a text document may span several rows)
            new_done = int(batch.example_ids.max()) + 1
            bar.update(max(0, new_done - done))
            done = max(done, new_done)


def _cache_blocks(
    adapter: ModelAdapter, dataset: Any, meta: CacheMetadata, out: Path, store: str, writer_opts: dict[str, Any],
    dist: Dist, *, batch_size: int, num_workers: int, progress: bool, request: AdapterRequest,
) -> Path:
    """Several ranks write one cache: rank 0 plans blocks, each rank writes blocks rank, rank +
    world, ... (resuming finished ones for free), rank 0 merges (see stores/local/parallel.py)."""
    from sae_core.plugins import get_component  # lazy: loads pluggy

    backend = get_component("store", store).build()
    path = Path(out) / meta.fingerprint()
    blocks = backend.plan_blocks(out, meta, len(dataset), dist.world) if dist.is_main else None
    if dist.is_main:
        adapter.write_extras(path)
    blocks = dist.all_gather_object(blocks)[0]  # everyone waits for rank 0's plan
    if blocks is None:  # already complete
        return path
    mine = [b for b in range(len(blocks)) if b % dist.world == dist.rank]
    total = sum(hi - lo for b, (lo, hi) in enumerate(blocks) if b in mine)
    bar = None
    if progress and dist.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit=meta.extra.get("example_unit", "ex"), dynamic_ncols=True, smoothing=0.1,
                   desc=f"caching (rank 0 of {dist.world}: {len(mine)} of {len(blocks)} blocks)")
    t0 = time.perf_counter()
    written = 0  # examples this launch cached (finished blocks and shards are not redone)
    try:
        for b in mine:
            lo, hi = blocks[b]
            writer = open_writer(out, meta, store=store, block=b, **writer_opts)
            before = bar.n if bar is not None else 0
            if not writer.complete:
                written += hi - writer.n_done
                if bar is not None:
                    bar.update(writer.n_done - lo)
                _fill(writer, adapter, DatasetHead(dataset, hi), writer.n_done, bar,
                      batch_size=batch_size, num_workers=num_workers, store=store)
            writer.close()
            if bar is not None:  # the whole block counts as done, unreadable trailing examples too
                bar.update(before + (hi - lo) - bar.n)
    finally:
        if bar is not None:
            bar.close()
    counts = dist.all_gather_object((written, dataset.skipped))  # also: every block is closed past here
    if dist.is_main:
        path = backend.merge_blocks(out, meta)
        _write_run_log(path, sum(c[0] for c in counts), time.perf_counter() - t0, sum(c[1] for c in counts),
                       batch_size, num_workers, request, world=dist.world)
    return path


def _progress(total: int, start: int, enabled: bool, unit: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, unit=unit, desc="caching", dynamic_ncols=True, smoothing=0.1)


def _write_run_log(
    path: Path, n: int, elapsed: float, skipped: int, batch_size: int, num_workers: int, request: AdapterRequest,
    *, world: int = 1,
) -> None:
    """Append this run's throughput beside the cache (``cache_runs.jsonl``)."""
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "examples": n,
        "seconds": round(elapsed, 3),
        "examples_per_s": round(n / elapsed, 2) if elapsed > 0 else None,
        "skipped_unreadable": skipped,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "device": request.device,
        "world_size": world,
    }
    append_line(path / "cache_runs.jsonl", json.dumps(record), sync=True)
