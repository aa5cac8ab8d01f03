"""Training throughput at 1 and N torchrun ranks, data- and SAE-parallel, side by side.

    uv run python bench/dist_scaling.py [--nproc 2] [--device cpu|cuda] [--steps 60]

One synthetic cache, one sweep of TopK SAEs; the same `sae train` command runs as a single
process and under `torchrun --nproc-per-node N` in both `--parallel` modes. Throughput is the
steady-state samples/s the trainer logs (the first log window, with start-up, is dropped), so the
numbers compare training, not process start. On CPU the single process gets all the threads the
ranks share (N threads vs 1 thread per rank): the same cores either way. The table is printed last;
JSON and markdown go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import cpu_model, synthetic_cache

HERE = Path(__file__).resolve().parent


def build_cache(root: Path, d: int, n: int) -> Path:
    import torch

    gen = torch.Generator().manual_seed(0)
    return synthetic_cache(root, adapter="synthetic", model=f"gauss-{d}", spec=f"gauss:{n}", d=d, n=n, chunk=50_000,
                           rows=lambda m: torch.randn(m, d, generator=gen))


def run(a: argparse.Namespace, cache: Path, sweep: Path, nproc: int, mode: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        args = ["train", "--data", str(cache), "--sweep", str(sweep), "--out", str(out), "-q", "--device", a.device]
        if nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   "-m", "sae_core", *args, "--parallel", mode]
        else:
            cmd = [sys.executable, "-m", "sae_core", *args]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise SystemExit(f"{nproc} ranks ({mode}) failed:\n{res.stderr[-3000:]}")
        recs = [json.loads(x) for x in next(out.glob("*/metrics.jsonl")).read_text().splitlines()]
    steady = [r["samples_per_s"] for r in recs[1:]] or [recs[-1]["samples_per_s"]]
    rate = sum(steady) / len(steady)
    print(f"  {nproc} rank(s), {mode}: {rate:,.0f} samples/s", file=sys.stderr)
    return {"nproc": nproc, "mode": mode if nproc > 1 else "single process", "threads_per_rank": threads,
            "samples_per_s": rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d-in", type=int, default=None)
    ap.add_argument("--exp-factor", type=int, default=8)
    ap.add_argument("--n-saes", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sae-bench-dist"))
    ap.add_argument("--out", type=Path, default=HERE / "out")
    a = ap.parse_args()
    gpu = a.device.startswith("cuda")
    d = a.d_in or (768 if gpu else 256)
    batch = a.batch_size or 4096
    steps = a.steps or (300 if gpu else 60)
    cache = build_cache(a.dir, d, max(200_000, batch * 8))
    ks = [16, 24, 32, 48, 64, 80, 96, 128][: a.n_saes]
    sweep = a.dir / "sweep.toml"
    sweep.write_text(
        f"[data]\nbatch_size = {batch}\nnormalize = false\n"
        f"[train]\nsteps = {steps}\nlog_every = {max(1, steps // 6)}\ncheckpoint_every = {steps + 1}\n"
        f"[sae]\narch = \"topk\"\nk = {ks}\nexp_factor = {a.exp_factor}\n"
    )
    cores = os.cpu_count() or 1
    single_threads = 1 if gpu else max(1, min(cores, a.nproc))
    rank_threads = 1 if gpu else max(1, single_threads // a.nproc)
    rows = [run(a, cache, sweep, 1, "data", single_threads)]
    rows += [run(a, cache, sweep, a.nproc, mode, rank_threads) for mode in ("data", "sae")]
    base = rows[0]["samples_per_s"]
    machine = cpu_model()
    lines = [
        f"{len(ks)} TopK SAEs (k={ks}), d_in={d}, d_sae={d * a.exp_factor}, batch={batch}, {steps} steps, "
        f"device={a.device}, {cores} cores ({machine})",
        "",
        "| launch | parallel | threads/rank | samples/s (each SAE) | vs 1 process |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        launch = "sae train" if r["nproc"] == 1 else f"torchrun --nproc-per-node {r['nproc']}"
        lines.append(f"| {launch} | {r['mode']} | {r['threads_per_rank']} | {r['samples_per_s']:,.0f} | "
                     f"{r['samples_per_s'] / base:.2f}x |")
    table = "\n".join(lines)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "dist_scaling.json").write_text(json.dumps({"machine": machine, "device": a.device, "rows": rows}, indent=2))
    (a.out / "dist_scaling.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
