"""Helpers the benchmark scripts share: synthetic caches, per-process peak memory, the CPU name.

The scripts run as ``python bench/<name>.py``, so this directory is on ``sys.path`` and they
import this module as ``common``.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

import torch


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM): unlike ru_maxrss it is reset by exec, so a
    worker does not inherit the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
    """The CPU's model name, printed with every table so numbers are read against their machine."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")


def synthetic_cache(
    root: Path, *, adapter: str, model: str, spec: str, d: int, n: int, chunk: int,
    rows: Callable[[int], torch.Tensor], dtype: str = "float32",
) -> Path:
    """A one-layer, one-token-per-example cache of ``n`` rows written in chunks of ``chunk``.

    ``rows(m)`` makes the next ``(m, d)`` rows (from the caller's seeded generator, so the same
    arguments always give the same rows). ``dtype``: the storage dtype (``float32``, ``float16``
    or ``bfloat16``; rows are rounded to it). The store is content-addressed by its metadata, so a
    finished cache of the same arguments is reused, not rewritten.
    """
    import numpy as np
    from sae_core.protocols import ActivationBatch, CacheMetadata
    from sae_core.stores import open_writer

    meta = CacheMetadata(adapter=adapter, model=model, layers=["x"], d_model=d, dtype=dtype,
                         tokens_per_example=1, token_kinds=["token"], dataset={"spec": spec})
    w = open_writer(root, meta)
    if w.complete:
        return w.close()
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        x = rows(m)  # (m, d)
        w.write(ActivationBatch(acts=x[:, None, None, :], example_ids=np.arange(lo, lo + m)))
    return w.close()
