"""Mutation testing of the SAE math: do the tests fail when the math is wrong?

    uv run python bench/mutations.py [--only ID[,ID...]] [--tests "tests/a.py tests/b.py"] [--list]

Each mutation is one small source edit that makes an architecture, the optimizer, the folding
of the normalisation or the trainer's reporting subtly wrong (a sign, a detach, a swapped
momentum, a dropped projection...). For each, the packages and tests are copied to a temporary
directory, the edit is applied there, and pytest runs the math tests with that copy first on
``sys.path`` (the installed editable packages are shadowed, the checkout is never touched). A
mutant is *killed* when some test fails, *survives* when all pass. The score is printed last;
docs/benchmarks.md records it. Not run in CI (each mutant runs the math tests: ~30-60 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = "packages/sae-core/src/sae_core"
DEFAULT_TESTS = ("tests/core/archs/test_arch_reference.py tests/core/archs/test_archs.py tests/core/train/test_train.py "
    "tests/core/train/test_train_correctness.py "
                 "tests/core/interop/test_interop.py tests/core/train/test_train_details.py")


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    old: str
    new: str
    what: str
    #: test files run for this mutant (None: --tests, the math tests); the pipeline's mutants name
    #: the fast file that checks them, not the whole live/e2e suites
    tests: str | None = None


DETAILS = "tests/core/train/test_train_details.py"
MUTATIONS = [
    # -- the list ---------------------------------------------------------------------
    Mutation("jumprelu-threshold-scaled-at-export", f"{CORE}/protocols/architecture.py",
             "out[name] = self._export_extra(name, i)",
             "out[name] = self._export_extra(name, i) * (scale if name == 'threshold' and self.name == 'jumprelu' else 1.0)",
             "JumpReLU threshold multiplied by the normalisation scale at export"),
    Mutation("gated-bmag-scaled-at-export", f"{CORE}/protocols/architecture.py",
             "out[name] = self._export_extra(name, i)",
             "out[name] = self._export_extra(name, i) * (scale if name == 'b_mag' else 1.0)",
             "gated b_mag multiplied by the normalisation scale at export"),
    Mutation("gated-aux-trains-decoder", f"{CORE}/archs/gated.py",
             "gate_act, self.W_dec.detach())", "gate_act, self.W_dec)",
             "gated auxiliary loss trains the decoder (detach removed)"),
    Mutation("batchtopk-momentum-swapped", f"{CORE}/archs/batchtopk.py",
             "m * self.threshold[:, 0] + (1 - m) * tau", "(1 - m) * self.threshold[:, 0] + m * tau",
             "BatchTopK EMA momentum swapped (m <-> 1-m)"),
    Mutation("decoder-projection-removed", f"{CORE}/protocols/architecture.py",
             "g.addcmul_(torch.linalg.vecdot(g, w).unsqueeze(-1), w, value=-1.0)", "pass",
             "decoder gradient projection removed"),
    Mutation("adam-no-bias-correction", f"{CORE}/train/optim.py",
             "c1 = 1 - b1**self.step_count\n        c2 = 1 - b2**self.step_count", "c1 = 1.0\n        c2 = 1.0",
             "Adam without bias correction"),
    Mutation("relu-l1-detached-norms", f"{CORE}/archs/relu.py",
             "norms = self.W_dec.norm(dim=-1)", "norms = self.W_dec.norm(dim=-1).detach()",
             "ReLU L1 with detached decoder norms"),
    # -- bank independence --------------------------------------------------------------------
    Mutation("topk-aux-k-of-bank", f"{CORE}/archs/topk_select.py",
             "return torch.minimum(wanted, dead.sum(-1))",
             "return torch.minimum(wanted.max().expand_as(wanted), dead.sum(-1))",
             "AuxK uses the bank's largest aux_k for every SAE (the old bug)"),
    Mutation("jumprelu-nan-target", f"{CORE}/archs/jumprelu.py",
             "t if t is not None else 1.0 for t in targets", "t if t is not None else float('nan') for t in targets",
             "JumpReLU: NaN target for penalty-mode SAEs of a mixed bank (the old bug)"),
    Mutation("topk-own-k-ignored", f"{CORE}/archs/topk.py",
             "return vals.relu() * keep[:, None, :]", "return vals.relu()",
             "TopK: every SAE keeps the bank's largest k"),
    Mutation("matryoshka-shared-prefixes", f"{CORE}/archs/matryoshka.py",
             "w[i, self.ends.index(m)] = 1.0 / len(h.prefixes)",
             "w[i, self.ends.index(m)] = 1.0 / len(h.prefixes)\n        w = (w > -1).float() / len(self.ends)",
             "Matryoshka: every SAE weighted on the union of the bank's prefixes"),
    # -- architecture math --------------------------------------------------------------------
    Mutation("jumprelu-theta-grad-sign", f"{CORE}/archs/jumprelu.py",
             "grad_theta = (grad * -(theta / eps)", "grad_theta = (grad * (theta / eps)",
             "JumpReLU: sign of the STE derivative of f w.r.t. θ flipped"),
    Mutation("jumprelu-theta-factor-dropped", f"{CORE}/archs/jumprelu.py",
             "grad_theta = (grad * -(theta / eps)", "grad_theta = (grad * -(1.0 / eps)",
             "JumpReLU: ∂f/∂θ without the θ factor"),
    Mutation("jumprelu-l0-kernel-width", f"{CORE}/archs/jumprelu.py",
             "grad_theta = (grad * -(1.0 / eps) * _rect((pre - theta) / eps))",
             "grad_theta = (grad * -(1.0 / eps) * _rect((pre - theta) / (2 * eps)))",
             "JumpReLU: L0 pseudo-derivative kernel twice as wide"),
    Mutation("jumprelu-no-clamp", f"{CORE}/archs/jumprelu.py",
             "self.threshold.clamp_(min=0.0)", "pass",
             "JumpReLU: θ not kept >= 0"),
    Mutation("jumprelu-target-linear", f"{CORE}/archs/jumprelu.py",
             "quad = (2.0 / tgt * (batch_l0 - tgt).pow(2))", "quad = (2.0 / tgt * (batch_l0 - tgt).abs())",
             "JumpReLU: target penalty |l0 − T| instead of quadratic"),
    Mutation("gated-rmag-no-exp", f"{CORE}/archs/gated.py",
             "mag = proj * self.r_mag.exp()[:, None, :]", "mag = proj * self.r_mag[:, None, :]",
             "Gated: magnitude path scaled by r_mag instead of exp(r_mag)"),
    Mutation("gated-l1-on-magnitude", f"{CORE}/archs/gated.py",
             "l1 = (gate_act * norms[:, None, :])", "l1 = (f * norms[:, None, :])",
             "Gated: sparsity penalty on the magnitude path, not the gate"),
    Mutation("topk-aux-residual-not-detached", f"{CORE}/archs/topk.py",
             "e = (x - recon).detach()", "e = (x - recon)",
             "AuxK residual not detached (AuxK trains the main reconstruction)"),
    Mutation("topk-train-aux-residual-not-detached", f"{CORE}/archs/topk.py",
             "e = (y - recon_).detach()", "e = y - recon_",
             "TopK training path: AuxK residual not detached"),
    Mutation("topk-block-aux-keeps-every-dead-latent", f"{CORE}/archs/dead_block.py",
             "if m.k_aux >= m.end - m.start:", "if True:",
             "AuxK's dense block: every dead latent decoded, not each token's top k_aux"),
    Mutation("topk-chunk-codes-misjoined", f"{CORE}/archs/topk_select.py",
             "sum(c.batch for c in chunks)", "chunks[0].batch * len(chunks)",
             "TopK codes chosen in chunks of tokens: the last, shorter chunk counted as a full one"),
    Mutation("adam-fused-first-saes-lr", f"{CORE}/train/optim.py",
             "lr=rate, beta1=b1", "lr=lr.tolist()[0], beta1=b1",
             "fused Adam (CPU): every SAE of a bank at the first SAE's lr"),
    Mutation("topk-aux-coeff-ignored", f"{CORE}/archs/topk.py",
             'return bank.hyper_tensor("aux_coeff") *', "return (1 / 32) *",
             "AuxK coefficient fixed at 1/32 whatever the SAE's aux_coeff"),
    Mutation("sparse-backward-bdec-term", f"{CORE}/archs/ragged.py",
             "g_bdec[i] = -(W_enc[i] @ g_benc[i])", "g_bdec[i] = 0.0",
             "TopK sparse backward: gradient through (x − b_dec) to b_dec dropped"),
    Mutation("relu-sparsity-warmup-ignored", f"{CORE}/archs/relu.py",
             'coeff = self.hyper_tensor("l1_coeff") * ctx.sparsity_scale', 'coeff = self.hyper_tensor("l1_coeff")',
             "ReLU: sparsity-coefficient warmup ignored"),
    Mutation("batchtopk-threshold-ge-vs-gt", f"{CORE}/archs/batchtopk.py",
             "return a * (a > self.threshold[:, None, :])", "return a * (a > 2 * self.threshold[:, None, :])",
             "BatchTopK: inference threshold doubled"),
    Mutation("batchtopk-calibrate-last", f"{CORE}/archs/batchtopk.py",
             "torch.stack(taus).mean(0)", "taus[0]",
             "BatchTopK: calibrated threshold from one batch, not the mean"),
    # -- folding and reporting ----------------------------------------------------------------
    Mutation("fold-wdec-not-divided", f"{CORE}/protocols/architecture.py",
             '"W_dec": self.W_dec[i].detach() / s_out,', '"W_dec": self.W_dec[i].detach(),',
             "export: decoder not divided by the normalisation scale"),
    Mutation("fold-bdec-not-divided", f"{CORE}/protocols/architecture.py",
             '"b_dec": self.b_dec[i].detach() / s_out,', '"b_dec": self.b_dec[i].detach(),',
             "export: decoder bias not divided by the normalisation scale"),
    Mutation("report-training-mode", f"{CORE}/train/bookkeeping.py",
             "sse, l0 = (sse_train, out.l0.float()) if infer is None else infer",
             "sse, l0 = (sse_train, out.l0.float())",
             "metrics.jsonl reports training-mode L0/FVU for BatchTopK"),
    Mutation("final-metrics-skipped", f"{CORE}/train/group.py",
             "last.update(fvu=float(fvu[i]), l0=float(rows[1, i] / n_tok), final_tokens=n_tok)", "pass",
             "cfg.json reports the last logged training metrics, not the saved SAE's"),
    Mutation("calibration-skipped", f"{CORE}/train/group.py",
             "bank.calibrate(batches, self.comm)", "pass",
             "BatchTopK threshold left at its lagging running estimate"),
    Mutation("seed-by-name", f"{CORE}/train/parallel.py",
             'crc32(f"{ident}#{r}".encode())', 'crc32(sae.name.encode())',
             "init seeded by SAE name: a sweep member differs from the same SAE trained alone"),
    Mutation("lr-warmup-off", f"{CORE}/train/schedule.py",
             "return (step + 1) / warmup", "return 1.0",
             "lr warmup ignored"),
    # -- training details (issue 21): the schedule reaching the update, the data plan ----------
    Mutation("lr-schedule-not-applied", f"{CORE}/train/group.py",
             "self.lrs[bi] * lr_f, autocast=autocast", "self.lrs[bi], autocast=autocast",
             "the scheduled lr is computed and logged but the update uses the base lr", DETAILS),
    Mutation("sparsity-warmup-off-by-one", f"{CORE}/train/schedule.py",
             "min(1.0, (step + 1) / warmup)", "min(1.0, step / warmup)",
             "sparsity-coefficient warmup one step late (0 at the first step)", DETAILS),
    Mutation("e2e-rows-same-each-batch", f"{CORE}/train/live/source.py",
             "(np.arange(self.e2e_rows) + j * self.e2e_rows) % len(rows)", "np.arange(self.e2e_rows) % len(rows)",
             "end-to-end training: every batch of a window splices the same rows", DETAILS),
    Mutation("e2e-rows-first-of-window", f"{CORE}/train/live/source.py",
             "win.index[rows[(np.arange(self.e2e_rows) + j * self.e2e_rows) % len(rows)]]",
             "win.index[np.arange(self.e2e_rows) % len(rows)]",
             "end-to-end training: the first rows of every window, whatever the batch", DETAILS),
    Mutation("buffer-mixing-epoch-ignored", f"{CORE}/stores/batching.py",
             "default_rng([self.seed, self.epoch, w])", "default_rng([self.seed, w])",
             "buffer mixing plan: every epoch the same order", DETAILS),
    Mutation("store-shuffle-epoch-ignored", f"{CORE}/stores/local/reader.py",
             "rng = np.random.default_rng([plan.seed, plan.epoch]) if plan.shuffle else None",
             "rng = np.random.default_rng([plan.seed]) if plan.shuffle else None",
             "local store's own shuffle: every epoch the same order", DETAILS),
    Mutation("e2e-jumprelu-threshold-frozen", f"{CORE}/train/live/e2e.py",
             "bank.decode(bank.splice_encode(x))", "bank.decode(bank.encode(x))",
             "--e2e: JumpReLU spliced through its hard step (θ gets no end-to-end gradient)",
             "tests/core/train/test_e2e.py -k jumprelu"),
    Mutation("e2e-jumprelu-ste-factor-dropped", f"{CORE}/archs/jumprelu.py",
             'return jumprelu(pre, self.threshold[:, None, :], self.hyper_tensor("bandwidth")[:, None, None])',
             'return jumprelu(pre, self.threshold[:, None, :], 2 * self.hyper_tensor("bandwidth")[:, None, None])',
             "--e2e: JumpReLU's spliced estimator with twice the bandwidth", "tests/core/train/test_e2e.py -k jumprelu"),
    Mutation("grad-clip-whole-bank", f"{CORE}/train/step.py",
             "norms = sq.sqrt()", "norms = sq.sum().sqrt().expand_as(sq)",
             "gradient clipped by the norm of the whole bank, not each SAE's", DETAILS),
    Mutation("grad-clip-arch-default-ignored", f"{CORE}/train/group.py",
             "grad_clip=type(bank).grad_clip if s.grad_clip is None else s.grad_clip", "grad_clip=s.grad_clip or 0.0",
             "architectures trained without their default gradient clipping (all but JumpReLU clip)", DETAILS),
    Mutation("grad-clip-topk-default-dropped", f"{CORE}/archs/topk.py",
             "grad_clip: ClassVar[float] = 1.0", "grad_clip: ClassVar[float] = 0.0",
             "TopK (and BatchTopK/Matryoshka, which take its value) trained without their measured clip", DETAILS),
]


def run_one(m: Mutation, tests: str, timeout: int) -> tuple[str, float, str]:
    """('killed' | 'survived' | 'error', seconds, detail) for one mutant."""
    with tempfile.TemporaryDirectory(prefix="sae-mut-") as tmp:
        tmp_root = Path(tmp)
        shutil.copytree(ROOT / "packages", tmp_root / "packages", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "tests", tmp_root / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        shutil.copy(ROOT / "pyproject.toml", tmp_root / "pyproject.toml")
        target = tmp_root / m.file
        src = target.read_text()
        if src.count(m.old) != 1:
            return "error", 0.0, f"pattern found {src.count(m.old)} times in {m.file}"
        target.write_text(src.replace(m.old, m.new))
        paths = [str(p) for p in sorted((tmp_root / "packages").glob("*/src"))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(tmp_root / "tests")]),
               "PYTHONDONTWRITEBYTECODE": "1"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                   "-m", "not slow", *tests.split()], cwd=tmp_root, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "killed", time.perf_counter() - t0, "timeout"
        dt = time.perf_counter() - t0
        if proc.returncode == 0:
            return "survived", dt, ""
        failed = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        return "killed", dt, (failed[0] if failed else proc.stdout.strip().splitlines()[-1])[:150]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated mutation ids")
    parser.add_argument("--tests", default=DEFAULT_TESTS, help="test files pytest runs per mutant")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    a = parser.parse_args()
    chosen = [m for m in MUTATIONS if not a.only or m.id in a.only.split(",")]
    if a.list:
        for m in chosen:
            print(f"{m.id:40s} {m.what}")
        return
    results = []
    for m in chosen:
        status, dt, detail = run_one(m, m.tests or a.tests, a.timeout)
        results.append((m, status, dt, detail))
        print(f"{status:9s} {dt:6.1f}s  {m.id:40s} {detail}", flush=True)
    killed = sum(s == "killed" for _, s, _, _ in results)
    print(f"\nmutation score: {killed}/{len(results)} killed")
    for m, s, _, _ in results:
        if s != "killed":
            print(f"  {s}: {m.id} — {m.what}")


if __name__ == "__main__":
    main()
