"""Trainer throughput: one TopK SAE, a bank of 8, and the same 8 trained one after another.

    uv run python bench/train_throughput.py [--steps 6] [--device cpu|cuda] [--d-sae N] [--no-profile] [--aux-paths]

Same synthetic cache for every case (d_in 768 unless --d-in; d_sae 6144 on CPU, 16384 on GPU; batch 4096).
Each case runs in a fresh subprocess through the real trainer (`run_training`), so peak memory
(RSS on CPU, torch.cuda.max_memory_allocated on GPU) is per case. samples/s counts tokens through
the training loop; "per-SAE samples/s" multiplies by the number of SAEs trained. The table with
the bank-vs-sequential ratio comes first.

Then, in one more fresh subprocess: the machine's GEMM ceiling (a bare ``torch.mm`` of the
encoder's shape, (batch, d_in) x (d_in, d_sae), 2·batch·d_in·d_sae FLOPs), one SAE's training
step (``sae_core.train.step.bank_step``, k = 32) as a fraction of it, and where that step's time
goes (torch.profiler over a few steps, each op charged to its phase: encoder GEMM, top-k, decode,
other forward work, the backward of the sparse encoder gradient and of the decoder, the update
(decoder-gradient projection, Adam, renormalisation)). The profiled steps mark 10% of the latents
dead so that AuxK runs; the step time without dead latents is printed beside it.

``--aux-paths``: one SAE's step with AuxK forced onto the ragged entries and onto the dense block
of dead latents (:mod:`sae_core.archs.dead_block`), for 1% to 90% of the latents dead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import peak_rss_mb, synthetic_cache


def make_cache(root: Path, n: int, d: int) -> Path:
    import torch

    gen = torch.Generator().manual_seed(0)
    return synthetic_cache(root, adapter="bench", model="gaussian", spec=f"gaussian:{n}", d=d, n=n, chunk=16384,
                           rows=lambda m: torch.randn(m, d, generator=gen))


PHASES = {  # profiler op name (substring) -> phase, first match wins, within the forward / backward region
    "forward": [("addmm", "encoder GEMM"), ("baddbmm", "encoder GEMM"), ("topk", "top-k (codes and AuxK)"),
                ("masked_fill", "top-k (codes and AuxK)"), ("embedding_bag", "decode (embedding_bag)")],
    "backward": [("EncoderEntries", "sparse encoder backward"), ("EmbeddingBag", "decoder backward"),
                 ("Unbind", "decoder backward")],
}


def phase_of(region: str, op: str) -> str:
    if region == "update":
        return "update (projection, Adam, renorm)"
    for key, phase in PHASES[region]:
        if key in op:
            return phase
    return f"other {region}"


def one_sae(args: argparse.Namespace, k: int = 32):
    """What the step measurements share: threads and the host allocator as ``run_training`` sets
    them on CPU, the device's sync, one random batch and one TopK SAE (k) with its optimizer."""
    import torch
    from sae_core.plugins import get_registry
    from sae_core.train.host_alloc import keep_freed_host_memory
    from sae_core.train.optim import BankAdam

    torch.set_num_threads(args.threads)
    keep_freed_host_memory()  # as run_training does on CPU
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    x = torch.randn(args.batch_size, args.d_in, device=dev)  # (batch, d_in)
    arch = get_registry().get("architecture", "topk").factory
    bank = arch.build_bank(args.d_in, args.d_sae, [arch.make_hyper({"k": k}, args.d_sae)], device=dev,
                           generator=torch.Generator().manual_seed(0))
    opt = BankAdam({name: p for name, p in bank.named_parameters() if p.requires_grad})
    return dev, sync, x, bank, opt


def timed(f, sync, reps: int = 5, pick=statistics.median) -> float:
    """Seconds of one call of ``f`` (``pick`` over ``reps`` calls, after one warm-up call)."""
    f()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        f()
        sync()
        times.append(time.perf_counter() - t0)
    return pick(times)


def step_profile(args: argparse.Namespace) -> None:
    """GEMM ceiling, one SAE's step against it, and the step's phases (see the module docstring)."""
    import torch
    from sae_core.protocols.architecture import TrainContext
    from sae_core.train.step import bank_step
    from torch.profiler import profile, record_function

    dev, sync, x, bank, opt = one_sae(args)
    B, d_sae = args.batch_size, args.d_sae
    W = torch.randn(args.d_in, d_sae, device=dev)  # (d_in, d_sae)
    gemm = timed(lambda: torch.mm(x, W), sync)
    lr = torch.full((1,), 1e-3, device=dev)
    dead = torch.rand(1, d_sae, generator=torch.Generator().manual_seed(1)).to(dev) < 0.1  # (1, d_sae)
    step_plain = timed(lambda: bank_step(bank, opt, x, TrainContext(step=5, sparsity_scale=1.0), lr), sync)
    ctx = TrainContext(step=5, sparsity_scale=1.0, dead=dead)
    step_aux = timed(lambda: bank_step(bank, opt, x, ctx, lr), sync)

    def phases(ctx: TrainContext, reps: int = 3) -> tuple[dict[str, float], float]:
        """Seconds per step of each phase, and of the profiled step (profiler overhead included)."""
        with profile() as prof:
            for _ in range(reps):  # bank_step's sequence, with its three regions labelled
                with record_function("phase:forward"):
                    out = bank.train_forward(x, ctx)
                for q in bank.parameters():
                    q.grad = None
                with record_function("phase:backward"):
                    out.loss.sum().backward()
                with record_function("phase:update"):
                    bank.project_decoder_grad()
                    opt.step(lr)
                    bank.post_step()
                sync()
        out_s: dict[str, float] = {}
        for ev in prof.events():  # the direct children of a region: each op once, with its children's time
            parent = ev.cpu_parent
            if parent is None or not parent.name.startswith("phase:") or ev.name.startswith("phase:"):
                continue
            ph = phase_of(parent.name.split(":", 1)[1], ev.name)
            out_s[ph] = out_s.get(ph, 0.0) + ev.cpu_time_total / 1e6 / reps
        return out_s, sum(e.cpu_time_total for e in prof.events() if e.name.startswith("phase:")) / 1e6 / reps

    plain, plain_total = phases(TrainContext(step=5, sparsity_scale=1.0))
    aux, aux_total = phases(ctx)
    print(json.dumps({"gemm_s": gemm, "gemm_gflops": 2 * B * args.d_in * d_sae / gemm / 1e9, "step_s": step_plain,
                      "step_aux_s": step_aux, "phases": plain, "phases_aux": aux, "profiled_step_s": plain_total,
                      "profiled_aux_s": aux_total}))


DEAD_FRACTIONS = (0.01, 0.05, 0.1, 0.3, 0.6, 0.9)


def aux_paths(args: argparse.Namespace) -> None:
    """One TopK SAE's step with AuxK on each path (ragged entries, dense block of dead latents),
    for several fractions of dead latents (k 32, k_aux = d_in/2 capped by the dead count)."""
    import torch
    from sae_core.archs.topk import TopKBank
    from sae_core.protocols.architecture import TrainContext
    from sae_core.train.step import bank_step

    dev, sync, x, bank, opt = one_sae(args)
    lr = torch.full((1,), 1e-4, device=dev)
    rows = []
    for frac in DEAD_FRACTIONS:
        dead = torch.rand(1, args.d_sae, generator=torch.Generator().manual_seed(1)).to(dev) < frac
        ctx = TrainContext(step=5, sparsity_scale=1.0, dead=dead)
        row = {"dead": frac, "m": int(dead.sum()), "k_aux": min(args.d_in // 2, int(dead.sum()))}
        for path, ratio in (("ragged", 0.0), ("block", float("inf"))):
            TopKBank.aux_block_ratio = ratio
            row[path] = timed(lambda ctx=ctx: bank_step(bank, opt, x, ctx, lr), sync, reps=3, pick=min)
        rows.append(row)
    print(json.dumps({"aux_paths": rows}))


def print_aux_paths(rows: list[dict], args: argparse.Namespace) -> None:
    from sae_core.archs.topk import TopKBank

    print(f"\nAuxK paths, one TopK SAE's step (k 32, k_aux = min(d_in/2, dead)); the default takes the block when "
          f"dead <= {TopKBank.aux_block_ratio:g} k_aux:")
    print(f"    {'dead':>5s} {'m':>6s} {'k_aux':>6s} {'ragged ms':>10s} {'block ms':>10s} {'block/ragged':>13s} {'default':>8s}")
    for r in rows:
        default = "block" if r["m"] <= TopKBank.aux_block_ratio * r["k_aux"] else "ragged"
        print(f"    {r['dead']:5.0%} {r['m']:6d} {r['k_aux']:6d} {r['ragged'] * 1e3:10.0f} {r['block'] * 1e3:10.0f} "
              f"{r['block'] / r['ragged']:13.2f} {default:>8s}")


def print_profile(r: dict, args: argparse.Namespace) -> None:
    flop = 2 * args.batch_size * args.d_in * args.d_sae
    print(f"\nGEMM ceiling: torch.mm ({args.batch_size} x {args.d_in}) @ ({args.d_in} x {args.d_sae}) = {flop / 1e9:.1f} GFLOP "
          f"in {r['gemm_s'] * 1e3:.0f} ms: {r['gemm_gflops']:.0f} GFLOP/s ({args.threads} threads, {args.device})")
    print(f"one TopK SAE's training step (k 32): {r['step_s'] * 1e3:.0f} ms = {r['step_s'] / r['gemm_s']:.2f} encoder "
          f"GEMMs at the ceiling; the encoder GEMM alone is {r['gemm_s'] / r['step_s']:.0%} of the step")
    print(f"  against a dense training step's 6 GEMMs of this shape (encoder and decoder, forward and backward; "
          f"{6 * flop / 1e9:.0f} GFLOP): {6 * r['gemm_s'] / r['step_s']:.0%} of the ceiling's rate")
    print(f"  with AuxK (10% of latents dead, k_aux = d_in/2): {r['step_aux_s'] * 1e3:.0f} ms")
    print(f"where one step's time goes (torch.profiler, 3 steps; profiled step {r['profiled_step_s'] * 1e3:.0f} ms, "
          f"with AuxK {r['profiled_aux_s'] * 1e3:.0f} ms, profiler overhead included):")
    print(f"    {'phase':36s} {'no dead latents':>20s} {'10% dead (AuxK)':>20s}")
    tot, tot_aux = sum(r["phases"].values()), sum(r["phases_aux"].values())
    for ph in sorted(set(r["phases"]) | set(r["phases_aux"]), key=lambda p: -r["phases"].get(p, 0.0)):
        a, b = r["phases"].get(ph, 0.0), r["phases_aux"].get(ph, 0.0)
        print(f"    {ph:36s} {a * 1e3:9.1f} ms {a / tot:6.0%}  {b * 1e3:9.1f} ms {b / tot_aux:6.0%}")


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
            cfg = expand(args.cache, args.d_in, {"batch_size": args.batch_size}, {"arch": "topk", "k": kk, "d_sae": args.d_sae},
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
                      "samples_per_s": samples / loop_seconds,
                      "per_sae_samples_per_s": args.steps * args.batch_size * n_saes / loop_seconds,
                      "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sae-bench-train"))
    ap.add_argument("--no-profile", action="store_true", help="skip the GEMM ceiling and the step profile")
    ap.add_argument("--aux-paths", action="store_true", help="also time AuxK's two paths over fractions of dead latents")
    ap.add_argument("--case", choices=["one", "bank", "sequential", "profile", "aux"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.d_sae is None:
        args.d_sae = 16384 if args.device.startswith("cuda") else 6144
    if args.case == "profile":
        step_profile(args)
        return
    if args.case == "aux":
        aux_paths(args)
        return
    if args.case:
        worker(args)
        return
    cache = make_cache(args.dir, max(args.batch_size * (args.steps + 10), 65536), args.d_in)
    rows, profile = [], None
    aux = None
    for case in ("one", "bank", "sequential", "profile", "aux"):
        if (case == "profile" and args.no_profile) or (case == "aux" and not args.aux_paths):
            continue
        cmd = [sys.executable, __file__, "--case", case, "--cache", str(cache), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--device", args.device, "--d-in", str(args.d_in), "--d-sae", str(args.d_sae),
               "--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"case {case} failed:\n{res.stderr[-3000:]}")
        result = json.loads(res.stdout.strip().splitlines()[-1])
        if case == "profile":
            profile = result
        elif case == "aux":
            aux = result["aux_paths"]
        else:
            rows.append(result)
        print(f"finished {case}", file=sys.stderr)
    by = {r["case"]: r for r in rows}
    print(f"TopK, d_in {args.d_in}, d_sae {args.d_sae}, batch {args.batch_size}, {args.steps} steps, device {args.device}")
    print(f"{'case':24s} {'SAEs':>4s} {'samples/s':>11s} {'per-SAE samples/s':>18s} {'peak MB':>9s}")
    for r in rows:
        print(f"{r['case']:24s} {r['n_saes']:4d} {r['samples_per_s']:11,.0f} {r['per_sae_samples_per_s']:18,.0f} {r['peak_mb']:9,.0f}")
    ratio = by["bank"]["per_sae_samples_per_s"] / by["sequential"]["per_sae_samples_per_s"]
    print(f"bank of 8 vs 8 sequential (per-SAE throughput): {ratio:.2f}x")
    n_bank = by["bank"]["n_saes"]
    print(f"peak memory: bank {by['bank']['peak_mb']:,.0f} MB; the {n_bank} singles side by side, one process each "
          f"(= {n_bank} x the one-SAE case): {n_bank * by['one']['peak_mb']:,.0f} MB; one after another in one process: "
          f"{by['sequential']['peak_mb']:,.0f} MB")
    if profile is not None:
        print_profile(profile, args)
    if aux is not None:
        print_aux_paths(aux, args)


if __name__ == "__main__":
    main()
