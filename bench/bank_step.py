"""One training step, side by side in one process: a TopK bank of 8 vs the same 8 SAEs one by one
vs the bare GEMM ceiling (8 × ``torch.mm`` of the encoder's shape), interleaved repetitions.

    uv run python bench/bank_step.py [--reps 3] [--d-sae 6144] [--batch-size 4096] [--dead 0.0]
                                     [--raw-malloc] [--profile] [--device cpu|cuda]

Prints median wall and CPU seconds (``time.process_time``) per case and the minor page faults
of one step (``resource``). ``--raw-malloc`` skips ``keep_freed_host_memory`` (what
``run_training`` does on CPU) to show what the page faults cost; ``--profile`` prints the
torch.profiler table of one bank step and of the 8 single steps. ``--device cuda``: everything on
the GPU, each timed case ends with ``torch.cuda.synchronize`` (CPU seconds then measure the host's
work of launching kernels, not the GPU's).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from sae_core.plugins import get_registry
from sae_core.protocols.architecture import TrainContext
from sae_core.train.host_alloc import keep_freed_host_memory
from sae_core.train.optim import BankAdam
from sae_core.train.step import bank_step

KS = [16, 24, 32, 40, 48, 56, 64, 72]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=6144)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dead", type=float, default=0.0, help="fraction of latents marked dead (AuxK runs when > 0)")
    ap.add_argument("--raw-malloc", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if not args.raw_malloc:
        keep_freed_host_memory()
    arch = get_registry().get("architecture", "topk").factory
    d_in, d_sae = args.d_in, args.d_sae

    def make(ks: list[int]) -> tuple:
        bank = arch.build_bank(d_in, d_sae, [arch.make_hyper({"k": k}, d_sae) for k in ks],
                               device=dev, generator=torch.Generator().manual_seed(0))
        return bank, BankAdam({k: p for k, p in bank.named_parameters() if p.requires_grad})

    x = torch.randn(args.batch_size, d_in, device=dev)  # (batch, d_in)
    bank, singles = make(KS), [make([k]) for k in KS]

    def dead(n: int) -> torch.Tensor:
        return (torch.rand(n, d_sae, generator=torch.Generator().manual_seed(1)) < args.dead).to(dev)  # (n, d_sae)

    def step(b, opt, n: int) -> None:
        bank_step(b, opt, x, TrainContext(step=5, sparsity_scale=1.0, dead=dead(n)), torch.full((n,), 1e-3, device=dev))

    W = torch.randn(d_in, d_sae, device=dev)
    cases = {"bank of 8": lambda: step(*bank, 8), "8 one by one": lambda: [step(b, o, 1) for b, o in singles],
             "GEMM ceiling x8": lambda: [torch.mm(x, W) for _ in KS]}
    for f in cases.values():
        f()  # warm up
    sync()
    res: dict[str, list[tuple[float, float, int]]] = {k: [] for k in cases}
    for _ in range(args.reps):
        for name, f in cases.items():
            flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            w, c = time.perf_counter(), time.process_time()
            f()
            sync()
            res[name].append((time.perf_counter() - w, time.process_time() - c,
                              resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt))
    print(f"TopK k={KS}, d_in {d_in}, d_sae {d_sae}, batch {args.batch_size}, dead {args.dead}, "
          f"{args.device}, {args.threads} threads, {'raw malloc' if args.raw_malloc else 'freed memory kept'}, median of {args.reps}")
    print(f"{'case':18s} {'wall s':>8s} {'CPU s':>8s} {'minor faults':>13s}")
    med = {}
    for name, rows in res.items():
        med[name] = (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
        print(f"{name:18s} {med[name][0]:8.2f} {med[name][1]:8.2f} {statistics.median(r[2] for r in rows):13,.0f}")
    b, s, g = med["bank of 8"], med["8 one by one"], med["GEMM ceiling x8"]
    print(f"bank vs one by one (per-SAE throughput): {s[0] / b[0]:.2f}x wall, {s[1] / b[1]:.2f}x CPU")
    print(f"one SAE's step as a fraction of the GEMM ceiling: {g[0] / s[0]:.0%} wall, {g[1] / s[1]:.0%} CPU")
    if args.profile:
        from torch.profiler import profile

        for name in ("bank of 8", "8 one by one"):
            with profile() as p:
                cases[name]()
            print(name)
            print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
