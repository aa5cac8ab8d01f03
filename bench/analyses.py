"""Throughput and peak memory of the descriptive analyses (one shared pass) vs an encode-only pass.

    uv run python bench/analyses.py [--tokens 20000] [--saes 2] [--d 256] [--exp 8] [--k 16] [--t 32]

Builds two synthetic text-like caches (``--tokens`` and 3 × ``--tokens`` tokens, rows of ``--t``
tokens, d_model ``--d``), trains ``--saes`` tiny TopK SAEs for a few steps on the small one, then
for each cache runs, each in a fresh process (so peak memory is that job's alone):

- ``encode``: the ceiling — read every chunk once and encode it with every SAE, nothing else;
- ``analyses``: ``sae analyze --only feature-stats top-examples activation-db quantile-examples``
  (the shared pass: statistics, running top-k, the activation database written to disk, then
  quantile examples read back from it), with ``--option db_shard_entries=262144`` (256k firings) so that both
  corpus sizes flush several shards (the default, 4M firings, would hold a small corpus whole).

Prints SAE-tokens/s of both (tokens × SAEs / wall seconds), their ratio by wall and by CPU time
(goal >= 0.5; plugin discovery is done before the clock starts), and the peak RSS
of each job: the analyses' peak must not grow with the corpus (the second size reads 3× the tokens).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ANALYSES = ["feature-stats", "top-examples", "activation-db", "quantile-examples"]
SHARD_ENTRIES = 1 << 18


def build_cache(root: Path, n_tokens: int, d: int, t: int, seed: int) -> Path:
    from sae_core.protocols import ActivationBatch, CacheMetadata
    from sae_core.stores import open_writer

    rows = max(1, n_tokens // t)
    meta = CacheMetadata(adapter="bench", model="random", layers=["x"], d_model=d, dtype="float32",
                         tokens_per_example=t, token_kinds=["token"] * t, dataset={"spec": f"random:{rows}:{seed}"})
    w = open_writer(root, meta)
    if w.complete:
        return w.close()
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(4 * d, d, generator=gen)  # activations: sparse mixtures of directions
    for lo in range(0, rows, 256):
        m = min(256, rows - lo)
        mix = torch.rand(m * t, 4 * d, generator=gen).pow(8)  # (m*t, 4d), mostly small weights
        x = (mix @ basis / 4).view(m, 1, t, d)
        ids = torch.randint(0, 1000, (m, t), generator=gen).numpy().astype(np.int32)
        w.write(ActivationBatch(acts=x, example_ids=np.arange(lo, lo + m), token_ids=ids))
    return w.close()


def train(cache: Path, out: Path, d: int, exp: int, k: int, saes: int) -> Path:
    from sae_core.train import expand, run_training

    if out.is_dir():
        return out
    ks = [k * (i + 1) for i in range(saes)]
    cfg = expand(str(cache), d, {"layer": "x", "tokens": "token", "batch_size": 256},
                 {"arch": "topk", "k": ks, "d_sae": d * exp}, {"steps": 5}, str(out))
    return run_training(cfg, progress=False)


def worker(mode: str, cache: str, run: str) -> dict:
    """One job in this process: 'encode' or 'analyses'; returns seconds, tokens, peak RSS."""
    from common import peak_rss_mb
    from sae_core.analyses.common import encode_tokens, read_rows, selected_mask
    from sae_core.analyses.shared_pass import chunk_rows
    from sae_core.checkpoint import find_checkpoints, load_sae
    from sae_core.plugins import get_registry
    from sae_core.protocols import AnalysisContext
    from sae_core.stores import open_reader

    get_registry()  # plugin discovery and imports happen once per process: not part of the throughput
    reader = open_reader(cache)
    ckpts = find_checkpoints(run)
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "encode":
        ctxs = [AnalysisContext(checkpoint=c, sae=load_sae(c), reader=reader) for c in ckpts]
        rows = np.arange(reader.n_examples)
        step = chunk_rows(ctxs)
        tokens = 0
        for lo in range(0, len(rows), step):
            acts, index = read_rows(ctxs[0], rows[lo : lo + step], 0)
            x = acts[:, 0]
            for ctx in ctxs:
                keep = selected_mask(ctx, index)
                codes = encode_tokens(ctx, x) * keep[..., None]
                tokens += int(keep.sum())
                del codes
        tokens //= len(ctxs)
    else:
        from sae_core.analyses.runner import analyse_run

        res = analyse_run(run, data=cache, only=ANALYSES, options={"db_shard_entries": str(SHARD_ENTRIES)},
                          progress=False)
        tokens = next(iter(res.values()))["feature-stats"]["n_tokens"]
    return {"mode": mode, "seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "tokens": tokens,
            "saes": len(ckpts),
            "peak_rss_mb": peak_rss_mb()}


def spawn(mode: str, cache: Path, run: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", mode, "--cache", str(cache), "--run", str(run)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=20_000)
    p.add_argument("--saes", type=int, default=2)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--exp", type=int, default=8)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--t", type=int, default=32)
    p.add_argument("--dir", type=Path, default=None, help="where caches and the run go (default: a temp dir)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.cache, a.run)))
        return
    from common import cpu_model

    with tempfile.TemporaryDirectory() as tmp:
        root = a.dir or Path(tmp)
        small = build_cache(root / "small", a.tokens, a.d, a.t, seed=0)
        big = build_cache(root / "big", 3 * a.tokens, a.d, a.t, seed=1)
        run = train(small, root / "run", a.d, a.exp, a.k, a.saes)
        print(f"# {cpu_model()}, torch threads {torch.get_num_threads()}; {a.saes} TopK SAEs d={a.d} "
              f"d_sae={a.d * a.exp} k={a.k}..; rows of {a.t} tokens; analyses: {' '.join(ANALYSES)}")
        print(f"{'corpus':>8} {'job':>9} {'tokens':>8} {'wall s':>7} {'CPU s':>7} {'SAE-tok/s':>10} {'peak MB':>8}")
        for name, cache in (("1x", small), ("3x", big)):
            enc, ana = spawn("encode", cache, run), spawn("analyses", cache, run)
            for r in (enc, ana):
                rate = r["tokens"] * r["saes"] / r["seconds"]
                print(f"{name:>8} {r['mode']:>9} {r['tokens']:>8} {r['seconds']:>7.2f} {r['cpu_s']:>7.2f} {rate:>10.0f} "
                      f"{r['peak_rss_mb']:>8.0f}")
            print(f"{name:>8} ratio analyses / encode-only: wall {enc['seconds'] / ana['seconds']:.2f}, "
                  f"CPU {enc['cpu_s'] / ana['cpu_s']:.2f} (goal >= 0.5; CPU time is the steadier on a shared machine)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
