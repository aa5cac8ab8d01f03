"""A sweep of N TopK SAEs from a cache on disk: one bank vs the N one by one, each pass cold.

    uv run python bench/cold_cache.py [--ns 1,4,8,16] [--dtypes float32,bfloat16] [--d-in 256]
                                      [--d-sae 512] [--rows 196608] [--batch-size 4096] [--device cpu]

Where a bank should pay for itself: when one SAE trains faster than the disk delivers the cache,
N SAEs trained one by one read the cache N times, a bank of N reads it once. Before every pass
over the cache (each run of the sequential case, the one run of the bank) the worker drops the
cache's shard files from the page cache (``posix_fadvise(POSIX_FADV_DONTNEED)``), so each pass
reads from disk whatever the machine's RAM. The driver checks that eviction works by timing a
plain read of the shards cold, then warm, and every case reports the bytes its process read from
the block device (``read_bytes`` of ``/proc/self/io``), which is ~0 for a warm pass.

Every case runs in a fresh subprocess through the real trainer (``expand`` + ``run_training``):
one epoch of the cache per SAE (``rows // batch`` steps), ``val_fraction`` 0, k = 16, 18, 20, ...
for the N SAEs. Besides training, ``read only`` is one cold pass of ``reader.batches`` (the
disk-bound rate of the reader) and ``warm one`` one SAE with the cache in RAM (the compute-bound
rate of one SAE). Columns: wall and CPU seconds of the whole case (start-up excluded), GB read
from disk, per-SAE samples/s (samples each SAE trained / wall). The bank-vs-sequential ratio is
sequential wall / bank wall, measured side by side in one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model, synthetic_cache


def shard_files(cache: Path) -> list[Path]:
    """Every file of the store's shards (activations and index), from its shard list."""
    doc = json.loads((cache / "shards.json").read_text())
    return [cache / s[key] for s in doc["shards"] for key in ("file", "index_file")]


def evict(cache: Path) -> None:
    """Drop the cache's pages from the page cache (clean pages only: the store is written and
    fsynced before any pass), so the next pass reads from disk."""
    for f in shard_files(cache):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_read_bytes() -> int:
    """Bytes this process caused to be fetched from the block device (not page-cache hits)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def plain_read_gbps(cache: Path) -> float:
    """GB/s of one sequential ``read`` of every shard file (8 MiB at a time)."""
    t0, n = time.perf_counter(), 0
    for f in shard_files(cache):
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(8 * 2**20):
                n += len(chunk)
    return n / (time.perf_counter() - t0) / 1e9


def make_cache(root: Path, d: int, n: int, dtype: str) -> Path:
    import torch

    gen = torch.Generator().manual_seed(0)
    cache = synthetic_cache(root, adapter="bench", model=f"gaussian-{dtype}", spec=f"gaussian:{n}", d=d, n=n,
                            chunk=16384, rows=lambda m: torch.randn(m, d, generator=gen), dtype=dtype)
    for f in shard_files(cache):  # written pages must be clean for fadvise to drop them
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return cache


# -- worker: one case in its own process ----------------------------------------------------------
def worker(a: argparse.Namespace) -> None:
    import torch
    from sae_core.protocols import BatchPlan
    from sae_core.stores import open_reader
    from sae_core.train import expand, run_training

    torch.set_num_threads(a.threads)
    cache = Path(a.cache)
    reader = open_reader(cache)
    d_in = reader.meta.d_model
    steps = reader.n_tokens() // a.batch_size
    ks = [16 + 2 * i for i in range(a.n)]
    runs = [ks] if a.case in ("bank", "warm one") else [[k] for k in ks]
    if a.case == "warm one":  # the cache in RAM: read it once before timing
        plain_read_gbps(cache)
    wall = cpu = 0.0
    read0 = disk_read_bytes()
    samples = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, kk in enumerate(runs):
            if a.case != "warm one":
                evict(cache)
            w, c = time.perf_counter(), time.process_time()
            if a.case == "read only":
                for b in reader.batches(BatchPlan(a.batch_size, layers=[0], seed=0, device=a.device)):
                    samples += len(b)
            else:
                cfg = expand(str(cache), d_in, {"batch_size": a.batch_size, "val_fraction": 0.0},
                             {"arch": "topk", "k": kk, "d_sae": a.d_sae},
                             {"steps": steps, "log_every": steps, "checkpoint_every": steps + 1, "device": a.device},
                             f"{tmp}/run{i}")
                run_training(cfg, progress=False)
                samples += steps * a.batch_size * len(kk)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            wall += time.perf_counter() - w
            cpu += time.process_time() - c
    print("RESULT " + json.dumps({"case": a.case, "n": a.n, "wall_s": wall, "cpu_s": cpu,
                                  "read_gb": (disk_read_bytes() - read0) / 1e9, "samples": samples,
                                  "per_sae_samples_per_s": samples / wall}))


# -- driver ---------------------------------------------------------------------------------------
def run_case(a: argparse.Namespace, cache: Path, case: str, n: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, "--n", str(n), "--cache", str(cache), "--d-sae", str(a.d_sae),
           "--batch-size", str(a.batch_size), "--device", a.device, "--threads", str(a.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"case {case} n={n} failed:\n{res.stderr[-3000:]}")
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    print(f"  {case} n={n}: {out['wall_s']:.1f} s", file=sys.stderr)
    return out


def crossover(rows: dict[tuple[str, int], dict], ns: list[int]) -> str:
    wins = [n for n in ns if n > 1 and rows[("sequential", n)]["wall_s"] > rows[("bank", n)]["wall_s"]]
    return f"N = {wins[0]}" if wins else f"none up to N = {max(ns)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="1,4,8,16")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--d-in", type=int, default=256)
    ap.add_argument("--d-sae", type=int, default=512)
    ap.add_argument("--rows", type=int, default=196608, help="samples in the cache (one epoch per SAE)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sae-bench-cold"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.case = a.worker
        worker(a)
        return
    ns = [int(x) for x in a.ns.split(",")]
    tables = []
    for dtype in a.dtypes.split(","):
        cache = make_cache(a.dir, a.d_in, a.rows, dtype)
        size = sum(f.stat().st_size for f in shard_files(cache)) / 1e9
        evict(cache)
        cold = plain_read_gbps(cache)
        warm = plain_read_gbps(cache)
        rows: dict[tuple[str, int], dict] = {}
        rows[("read only", 1)] = run_case(a, cache, "read only", 1)
        rows[("warm one", 1)] = run_case(a, cache, "warm one", 1)
        for n in ns:  # side by side: bank and sequential of the same N back to back
            rows[("bank", n)] = run_case(a, cache, "bank", n)
            if n > 1:
                rows[("sequential", n)] = run_case(a, cache, "sequential", n)
            else:
                rows[("sequential", 1)] = rows[("bank", 1)]
        lines = [f"{dtype} cache: {a.rows:,} samples x d_in {a.d_in} = {size:.3f} GB on disk; plain read cold "
                 f"{cold:.2f} GB/s, warm {warm:.2f} GB/s (eviction {'works' if warm > 1.5 * cold else 'DOUBTFUL'})",
                 f"TopK d_sae {a.d_sae}, batch {a.batch_size}, {a.rows // a.batch_size} steps (one epoch) per SAE, "
                 f"device {a.device}, {a.threads} threads, {cpu_model()}, load {os.getloadavg()[0]:.1f}",
                 f"{'case':12s} {'N':>3s} {'wall s':>8s} {'CPU s':>8s} {'GB read':>8s} {'per-SAE samples/s':>18s} "
                 f"{'seq/bank wall':>14s}"]
        for (case, n), r in rows.items():
            if case == "sequential" and n == 1:
                continue
            ratio = ""
            if case == "sequential":
                ratio = f"{r['wall_s'] / rows[('bank', n)]['wall_s']:.2f}x"
            lines.append(f"{case:12s} {n:3d} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['read_gb']:8.3f} "
                         f"{r['per_sae_samples_per_s']:18,.0f} {ratio:>14s}")
        lines.append(f"crossover (bank faster than sequential): {crossover(rows, ns)}")
        tables.append("\n".join(lines))
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
