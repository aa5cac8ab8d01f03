"""Trainer throughput: one TopK SAE, a bank of 8, and the same 8 trained one after another.

    uv run python bench/train_throughput.py [--steps 6] [--device cpu|cuda] [--d-sae N]

Same synthetic cache for every case (d_in 768; d_sae 6144 on CPU, 16384 on GPU; batch 4096).
Each case runs in a fresh subprocess through the real trainer (`run_training`), so peak memory
(RSS on CPU, torch.cuda.max_memory_allocated on GPU) is per case. samples/s counts tokens through
the training loop; "per-SAE samples/s" multiplies by the number of SAEs trained. The table with
the bank-vs-sequential ratio is printed last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import peak_rss_mb, synthetic_cache

D_IN = 768



def make_cache(root: Path, n: int) -> Path:
    import torch

    gen = torch.Generator().manual_seed(0)
    return synthetic_cache(root, adapter="bench", model="gaussian", spec=f"gaussian:{n}", d=D_IN, n=n, chunk=16384,
                           rows=lambda m: torch.randn(m, D_IN, generator=gen))


def worker(args: argparse.Namespace) -> None:
    import torch
    from sae_core.train import expand, run_training

    torch.set_num_threads(args.threads)
    ks = [32] if args.case == "one" else [16, 24, 32, 40, 48, 56, 64, 72]
    runs = [ks] if args.case in ("one", "bank") else [[k] for k in ks]
    t0 = time.perf_counter()
    loop_seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, kk in enumerate(runs):
            cfg = expand(args.cache, D_IN, {"batch_size": args.batch_size}, {"arch": "topk", "k": kk, "d_sae": args.d_sae},
                         {"steps": args.steps, "log_every": args.steps, "device": args.device}, f"{tmp}/run{i}")
            run_training(cfg, progress=False)
            for line in Path(f"{tmp}/run{i}").glob("*/metrics.jsonl"):
                rec = json.loads(line.read_text().splitlines()[-1])
                loop_seconds += rec["samples"] / rec["samples_per_s"]  # one group: same for every SAE
                break
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if args.device.startswith("cuda") else peak_rss_mb()
    n_saes = len(ks)
    samples = args.steps * args.batch_size * len(runs)
    print(json.dumps({"case": args.case, "n_saes": n_saes, "loop_s": loop_seconds, "wall_s": wall,
                      "samples_per_s": samples / loop_seconds, "per_sae_samples_per_s": args.steps * args.batch_size * n_saes / loop_seconds,
                      "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d-sae", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sae-bench-train"))
    ap.add_argument("--case", choices=["one", "bank", "sequential"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.d_sae is None:
        args.d_sae = 16384 if args.device.startswith("cuda") else 6144
    if args.case:
        worker(args)
        return
    cache = make_cache(args.dir, max(args.batch_size * (args.steps + 10), 65536))
    rows = []
    for case in ("one", "bank", "sequential"):
        cmd = [sys.executable, __file__, "--case", case, "--cache", str(cache), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--device", args.device, "--d-sae", str(args.d_sae),
               "--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"finished {case}", file=sys.stderr)
    by = {r["case"]: r for r in rows}
    print(f"TopK, d_in {D_IN}, d_sae {args.d_sae}, batch {args.batch_size}, {args.steps} steps, device {args.device}")
    print(f"{'case':24s} {'SAEs':>4s} {'samples/s':>11s} {'per-SAE samples/s':>18s} {'peak MB':>9s}")
    for r in rows:
        print(f"{r['case']:24s} {r['n_saes']:4d} {r['samples_per_s']:11,.0f} {r['per_sae_samples_per_s']:18,.0f} {r['peak_mb']:9,.0f}")
    ratio = by["bank"]["per_sae_samples_per_s"] / by["sequential"]["per_sae_samples_per_s"]
    print(f"bank of 8 vs 8 sequential (per-SAE throughput): {ratio:.2f}x")


if __name__ == "__main__":
    main()
