"""Shuffled-read throughput of the local store vs sequential reads and a plain memmap gather.

    uv run python bench/store_read.py [--size-gb 2] [--dir /tmp/sae-bench-store]

Builds (or reuses) a fp32 cache of ``--size-gb`` with d_model 768, warms the page cache, then times
in one run: (1) a sequential pass with a plain np.memmap (the ceiling), (2) our reader, sequential,
(3) our reader, shuffled, (4) a plain np.memmap random-index gather, all in batches of 4096 torch
float32 tensors. Goal: shuffled >= 70% of sequential. The table is printed last.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sae_core.protocols import ActivationBatch, BatchPlan, CacheMetadata
from sae_core.stores import open_reader, open_writer

D = 768


def build(root: Path, size_gb: float) -> Path:
    rows = int(size_gb * 2**30 // (D * 4))
    meta = CacheMetadata(
        adapter="bench", model="random", layers=["l0"], d_model=D, dtype="float32", tokens_per_example=1,
        token_kinds=["token"], dataset={"spec": f"random:{rows}"},
    )
    writer = open_writer(root, meta)
    if writer.complete:
        return writer.close()
    gen = torch.Generator().manual_seed(0)
    step = 32768
    for lo in range(writer.n_done, rows, step):
        n = min(step, rows - lo)
        writer.write(ActivationBatch(acts=torch.randn(n, 1, 1, D, generator=gen), example_ids=np.arange(lo, lo + n)))
    return writer.close()


def timed(name: str, batches, nbytes_per_sample: int) -> dict:
    t0 = time.perf_counter()
    n = 0
    checksum = 0.0
    for b in batches:
        n += b.shape[0]
        checksum += float(b[0, 0, 0])  # touch the data so nothing is optimised away
    dt = time.perf_counter() - t0
    return {"reader": name, "samples": n, "seconds": dt, "samples_per_s": n / dt, "GB_per_s": n * nbytes_per_sample / dt / 1e9}


def memmap_sequential(reader, bs: int):
    for mm in reader._acts:
        for lo in range(0, len(mm), bs):
            yield torch.from_numpy(np.array(mm[lo : lo + bs, :, 0]))


def memmap_random(reader, bs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for mm in reader._acts:
        perm = rng.permutation(len(mm))
        for lo in range(0, len(perm), bs):
            idx = np.sort(perm[lo : lo + bs])
            yield torch.from_numpy(mm[idx, :, 0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sae-bench-store"))
    ap.add_argument("--batch-size", type=int, default=4096)
    args = ap.parse_args()
    torch.set_num_threads(2)
    path = build(args.dir, args.size_gb)
    reader = open_reader(path)
    bs = args.batch_size
    per = D * 4
    for _ in memmap_sequential(reader, 1 << 16):  # warm the page cache
        pass
    rows = [
        timed("np.memmap sequential (ceiling)", memmap_sequential(reader, bs), per),
        timed("sae reader, sequential", reader.batches(BatchPlan(bs, shuffle=False)), per),
        timed("sae reader, shuffled", reader.batches(BatchPlan(bs, shuffle=True, seed=0)), per),
        timed("np.memmap random gather", memmap_random(reader, bs), per),
    ]
    base = rows[0]["samples_per_s"]
    print(f"cache: {path} ({reader.n_examples:,} samples x {D} fp32 = {reader.n_examples * per / 2**30:.2f} GiB)")
    print(f"{'reader':34s} {'samples/s':>12s} {'GB/s':>7s} {'vs sequential':>14s}")
    for r in rows:
        print(f"{r['reader']:34s} {r['samples_per_s']:12,.0f} {r['GB_per_s']:7.2f} {r['samples_per_s'] / base:13.0%}")


if __name__ == "__main__":
    main()
