"""Quality per architecture, sae vs SAELens: FVU at matched L0 on held-out MiniLM activations.

    uv run python bench/quality.py [--archs relu,topk,...] [--steps 400] [--quick]

Both libraries train each of the six architectures SAELens ships (standard/relu, topk,
batchtopk, jumprelu, gated, matryoshka-batchtopk) on the same MiniLM layer-3 activations, in the
same order: SAELens's data provider reads our store's shuffled stream, normalised with the scale
our trainer computes (E||x|| = √d_in). Same d_sae, batch, steps, Adam betas, lr schedule (5%
warmup, linear decay over the last 20%), sparsity-coefficient warmup (5%), three sparsity levels (four for gated)
per architecture, and for each (level, library) the better of a small lr grid. SAELens runs at its
documented defaults otherwise (decoder init norm 0.1, AuxK coefficient, BatchTopK threshold EMA
0.01, JumpReLU bandwidth 0.05 / init 0.01 with its Gemma-Scope-2 "quadratic" target mode).

Every number is what a *saved* SAE does on held-out data: ours are loaded from the checkpoint
directory, SAELens's are saved with ``save_inference_model`` and loaded with ``SAE.load_from_disk``
(so BatchTopK/Matryoshka are measured as the JumpReLU SAEs both export). The held-out set is the
last 10% of cached windows, copied to its own store and never given to either trainer. L0 counts
non-zero codes; "dead" is the fraction of latents that never fire on the held-out set.

FVU at matched L0: where both saved SAEs of a level fire within 5% of each other the level is
compared directly; otherwise SAELens's curve is interpolated (linearly in log L0) at our L0, and
a level whose L0 lies outside SAELens's range is reported without a ratio. Then the matched-L0
frontier: each library's FVU and dead fraction at L0 = 16, 32, 64 on its own FVU-vs-L0 front (lower convex hull in log L0) over
every level and lr of the grid (the lr moves an L1 SAE's L0 as much as λ), and the winner. The tables are printed last;
JSON, markdown and FVU-vs-L0 plots go to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import cpu_model

HERE = Path(__file__).resolve().parent

# arch -> SAELens architecture name, the sparsity knob per library and its three levels
ARCHS: dict[str, dict[str, Any]] = {
    "relu": {"saelens": "standard", "ours": "l1_coeff", "theirs": "l1_coefficient", "levels": [1.5, 3.0, 6.0]},
    "topk": {"saelens": "topk", "ours": "k", "theirs": "k", "levels": [16, 32, 64]},
    "batchtopk": {"saelens": "batchtopk", "ours": "k", "theirs": "k", "levels": [16, 32, 64]},
    "jumprelu": {"saelens": "jumprelu", "ours": "target_l0", "theirs": "target_l0", "levels": [16.0, 32.0, 64.0]},
    # the same λ for both: with SAELens's encoder init scale and gradient clipping (issue 21) our
    # gated SAE's λ -> L0 map is close to SAELens's (before, ours needed 2x the λ for its L0); λ 2
    # fills the hole between L0 ≈ 40 and 80 that left L0 64 to interpolation over a wide gap
    "gated": {"saelens": "gated", "ours": "l1_coeff", "theirs": "l1_coefficient", "levels": [1.5, 2.0, 3.0, 6.0]},
    "matryoshka": {"saelens": "matryoshka_batchtopk", "ours": "k", "theirs": "k", "levels": [16, 32, 64]},
}


# -- data ------------------------------------------------------------------------------------------

def build_caches(root: Path, docs: int) -> tuple[Path, Path]:
    """MiniLM layer-3 residuals of ``docs`` pydocs documents, split by window: the first 90% of
    windows train, the last 10% are copied into a held-out store neither trainer sees."""
    import numpy as np
    from sae_core.caching import run_cache
    from sae_core.protocols import ActivationBatch, AdapterRequest
    from sae_core.stores import open_reader, open_writer

    full = run_cache("tlens", AdapterRequest(model="minilm", layers=["3"], context_size=128), "pydocs",
                     root / "full", batch_size=32, max_examples=docs, progress=False)
    reader = open_reader(full)
    n = reader.n_examples
    cut = int(n * 0.9)
    out = []
    for name, lo, hi in (("train", 0, cut), ("heldout", cut, n)):
        meta = reader.meta.__class__(**{**reader.meta.__dict__, "dataset": {**reader.meta.dataset, "split": name},
                                        "n_examples": None, "complete": False})
        w = open_writer(root / name, meta)
        if not w.complete:
            for s in range(lo, hi, 64):
                acts, index = reader.read_examples(s, min(hi, s + 64))
                w.write(ActivationBatch(acts=acts, example_ids=index["example"][:, 0].astype(np.int64),
                                        token_ids=index["token"], valid=index["valid"].astype(bool),
                                        positions=index["position"]))
        out.append(w.close())
    return out[0], out[1]


def heldout_tokens(path: str, limit: int = 16384) -> torch.Tensor:
    """Every valid held-out token (raw activations), at most ``limit``: (n, d_in)."""
    from sae_core.stores import open_reader

    reader = open_reader(path)
    acts, index = reader.read_examples(0, reader.n_examples, layers=[0])
    x = acts[:, 0][torch.from_numpy(index["valid"].astype(bool))]  # (tokens, d_in)
    return x[:limit].float()


def evaluate(encode, decode, x: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        f = encode(x)
        recon = decode(f)
    active = f != 0
    return {"fvu": float(((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()),
            "l0": float(active.float().sum(-1).mean()), "dead": float((~active.any(0)).float().mean())}


# -- workers ---------------------------------------------------------------------------------------

def worker_ours(a: argparse.Namespace) -> list[dict[str, Any]]:
    from sae_core.checkpoint import find_checkpoints, load_sae
    from sae_core.stores import open_reader
    from sae_core.train import expand, run_training

    spec = ARCHS[a.arch]
    apply_ours_set(a.arch, a.ours_set)
    reader = open_reader(a.cache)
    x = heldout_tokens(a.heldout)
    sae = {"arch": a.arch, "d_sae": a.d_sae, "lr": a.lrs, spec["ours"]: spec.get("levels_ours", spec["levels"])}
    train_extra = {k: float(v) for k, v in (i.split("=") for i in filter(None, a.ours_set.split(",")))
                   if k in ("grad_clip", "adam_beta1", "adam_beta2", "lr_decay_frac")}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = expand(a.cache, reader.meta.d_model, {"layer": 0, "batch_size": a.batch_size, "val_fraction": 0.0},
                     sae, {"steps": a.steps, "seed": a.seed, "log_every": a.steps, "checkpoint_every": a.steps + 1,
                           "device": a.device, **train_extra}, f"{tmp}/run")
        t0 = time.perf_counter()
        run = run_training(cfg, progress=False)
        seconds = time.perf_counter() - t0
        rows = []
        for ckpt in find_checkpoints(run):
            model = load_sae(ckpt)
            level = model.cfg.hyper[spec["ours"]]
            rows.append({"level": level, "lr": model.cfg.train.lr, **evaluate(model.encode, model.decode, x),
                         "seconds": seconds / len(cfg.saes)})
    return rows


def apply_ours_set(arch: str, spec: str) -> None:
    """``--ours-set``: swap one training ingredient of our architecture for an ablation, e.g.
    ``init_encoder_scale=0.1``, ``init_decoder_norm=0.1``, ``unit_norm_decoder=0`` (class
    attributes of the bank), ``b_dec_init=zeros`` (SAELens's b_dec init instead of the geometric
    median), ``levels=1.5/3/6`` (other sparsity levels), ``grad_clip=1`` (SAELens's gradient
    clipping) and the other [train] settings named in worker_ours."""
    from sae_core.plugins import get_component

    bank_cls = get_component("architecture", arch).factory.bank_cls
    for item in filter(None, spec.split(",")):
        key, value = item.split("=")
        if key == "b_dec_init":
            assert value == "zeros", value
            bank_cls.init_b_dec = lambda self, b: None
        elif key == "levels":
            ARCHS[arch]["levels_ours"] = [float(v) for v in value.split("/")]
        elif key in ("grad_clip", "adam_beta1", "adam_beta2", "lr_decay_frac"):
            continue  # training settings: worker_ours passes them to the run
        elif key == "unit_norm_decoder":
            bank_cls.unit_norm_decoder = bool(int(value))
        else:
            setattr(bank_cls, key, float(value))


def _saelens_sae(arch: str, d_in: int, d_sae: int, level: float, steps: int, device: str) -> Any:
    import importlib

    spec = ARCHS[arch]
    modules = {"standard": ("standard_sae", "Standard"), "topk": ("topk_sae", "TopK"),
               "batchtopk": ("batchtopk_sae", "BatchTopK"), "jumprelu": ("jumprelu_sae", "JumpReLU"),
               "gated": ("gated_sae", "Gated"), "matryoshka_batchtopk": ("matryoshka_batchtopk_sae", "MatryoshkaBatchTopK")}
    mod_name, prefix = modules[spec["saelens"]]
    mod = importlib.import_module(f"sae_lens.saes.{mod_name}")
    cfg_cls, sae_cls = getattr(mod, f"{prefix}TrainingSAEConfig"), getattr(mod, f"{prefix}TrainingSAE")
    kwargs: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae, "device": device, "dtype": "float32"}
    warm = max(1, steps // 20)
    if spec["theirs"] == "k":
        kwargs["k"] = int(level)
    elif arch == "jumprelu":
        kwargs.update(jumprelu_sparsity_loss_mode="quadratic", target_l0=float(level), l0_warm_up_steps=warm)
    else:
        kwargs.update(l1_coefficient=float(level), l1_warm_up_steps=warm)
    if arch == "matryoshka":
        kwargs["matryoshka_widths"] = sorted({d_sae // 8, d_sae // 4, d_sae // 2, d_sae})
    return sae_cls(cfg_cls(**kwargs))


def worker_saelens(a: argparse.Namespace) -> list[dict[str, Any]]:
    from sae_core.protocols import BatchPlan
    from sae_core.stores import open_reader
    from sae_core.train.init import norm_scale
    from sae_lens import SAE
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    reader = open_reader(a.cache)
    d = reader.meta.d_model
    # the scale our trainer uses: its side stream (seed + 7919), norm_batches = 8 batches
    side_plan = BatchPlan(a.batch_size, layers=[0], seed=a.seed + 7919)
    side = [b[:, 0] for _, b in zip(range(8), reader.batches(side_plan), strict=False)]
    scale = norm_scale(torch.cat(side))
    x = heldout_tokens(a.heldout) * scale
    rows = []
    for level in ARCHS[a.arch]["levels"]:
        for lr in a.lrs:
            torch.manual_seed(a.seed)
            sae = _saelens_sae(a.arch, d, a.d_sae, level, a.steps, a.device)

            def provider():
                epoch = 0
                while True:
                    plan = BatchPlan(a.batch_size, layers=[0], seed=a.seed, epoch=epoch, device=a.device)
                    for b in reader.batches(plan):
                        yield b[:, 0] * scale
                    epoch += 1

            tcfg = SAETrainerConfig(
                total_training_samples=a.steps * a.batch_size, train_batch_size_samples=a.batch_size, lr=lr,
                lr_end=lr * 1e-3, lr_scheduler_name="constant", lr_warm_up_steps=max(1, a.steps // 20),
                lr_decay_steps=int(a.steps * 0.2), device=a.device, logger=LoggingConfig(log_to_wandb=False),
                n_checkpoints=0, save_final_checkpoint=False)
            t0 = time.perf_counter()
            SAETrainer(cfg=tcfg, sae=sae, data_provider=provider()).fit()
            seconds = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                sae.save_inference_model(tmp)
                saved = SAE.load_from_disk(tmp, device=a.device)
                rows.append({"level": level, "lr": lr, **evaluate(saved.encode, saved.decode, x), "seconds": seconds})
    return rows


def worker(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    rows = worker_ours(a) if a.lib == "sae" else worker_saelens(a)
    print("RESULT " + json.dumps(rows))


# -- driver ----------------------------------------------------------------------------------------

def measure(a: argparse.Namespace, lib: str, arch: str, cache: Path, heldout: Path) -> list[dict[str, Any]]:
    cmd = [sys.executable, __file__, "--worker", "--lib", lib, "--arch", arch, "--cache", str(cache),
           "--heldout", str(heldout), "--steps", str(a.steps), "--batch-size", str(a.batch_size),
           "--d-sae", str(a.d_sae), "--lr-grid", ",".join(map(str, a.lrs)), "--seed", str(a.seed),
           "--device", a.device, "--threads", str(a.threads), "--ours-set", a.ours_set]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{lib} {arch} failed:\n{res.stderr[-4000:]}")
    print(f"  {lib:8s} {arch:11s} {time.perf_counter() - t0:6.0f} s", file=sys.stderr, flush=True)
    return json.loads(next(x for x in res.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])


def best_per_level(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each sparsity level, the lr whose saved SAE has the lowest held-out FVU."""
    best: dict[float, dict[str, Any]] = {}
    for r in rows:
        if r["level"] not in best or r["fvu"] < best[r["level"]]["fvu"]:
            best[r["level"]] = r
    return [best[k] for k in sorted(best)]


def interp_fvu(curve: list[dict[str, Any]], l0: float, slack: float = 1.1) -> float | None:
    """FVU of ``curve`` at ``l0``, linear in log L0 along its nearest segment; None when ``l0``
    lies more than ``slack``× outside the curve's L0 range (no honest comparison there)."""
    pts = sorted((r["l0"], r["fvu"]) for r in curve if r["l0"] > 0)
    if len(pts) < 2 or not pts[0][0] / slack <= l0 <= pts[-1][0] * slack:
        return None
    i = max(0, min(len(pts) - 2, next((j - 1 for j, (lj, _) in enumerate(pts) if lj >= l0), len(pts) - 2)))
    (l_a, f_a), (l_b, f_b) = pts[i], pts[i + 1]
    if l_b <= l_a:
        return f_a
    t = (math.log(l0) - math.log(l_a)) / (math.log(l_b) - math.log(l_a))
    return f_a + t * (f_b - f_a)


def compare(arch: str, ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our saved SAEs against SAELens's FVU-vs-L0 curve at our L0 (the same level's point where
    both libraries hit the L0 the level asks for)."""
    out = []
    for o, t in zip(ours, theirs, strict=True):
        same_l0 = abs(o["l0"] - t["l0"]) <= 0.05 * max(o["l0"], t["l0"])
        at = t["fvu"] if same_l0 else interp_fvu(theirs, o["l0"])
        out.append({"arch": arch, "level": o["level"], "ours": o, "saelens": t, "saelens_fvu_at_our_l0": at,
                    "rel": None if at is None else (o["fvu"] - at) / at})
    return out


FRONTIER_L0 = (16.0, 32.0, 64.0)


def interp_key(curve: list[dict[str, Any]], l0: float, key: str) -> float | None:
    """``key`` of ``curve`` at ``l0`` (as :func:`interp_fvu`, for any column, e.g. ``dead``)."""
    return interp_fvu([{"l0": r["l0"], "fvu": r[key]} for r in curve], l0)


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The FVU-vs-L0 front of every (level, lr) run: the lower convex hull of the runs in (log L0,
    FVU). The lr changes an L1 SAE's L0 as much as λ does, so the best lr *per level* (lowest FVU)
    would pick the densest run; at matched L0 the front is the fair curve. Convex, not merely
    non-dominated: a poorly trained run (lr 1e-3) that no run beats on both axes can still lie far
    above the chord of its neighbours, and interpolating through it would charge its library for
    a run it did not need (measured: SAELens BatchTopK, L0 86.0 at FVU 0.2166 between 46.3 at
    0.2216 and 93.2 at 0.1497)."""
    pts = sorted((r for r in rows if r["l0"] > 0), key=lambda r: (r["l0"], r["fvu"]))
    hull: list[dict[str, Any]] = []
    for r in pts:
        if hull and r["l0"] == hull[-1]["l0"]:
            continue  # same L0, higher FVU (sorted): never on the lower hull
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = ((math.log(h["l0"]), h["fvu"]) for h in hull[-2:])
            x3, y3 = math.log(r["l0"]), r["fvu"]
            if (x2 - x1) * (y3 - y1) - (y2 - y1) * (x3 - x1) > 0:  # a left turn: hull[-1] below the chord
                break
            hull.pop()
        hull.append(r)
    # the FVU-decreasing part only: a denser run with a higher FVU than a sparser one is dominated
    best = min(range(len(hull)), key=lambda i: hull[i]["fvu"]) if hull else -1
    return hull[:best + 1]


def frontier(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """For each architecture and L0 in FRONTIER_L0: each library's FVU and dead fraction on its
    own FVU-vs-L0 front over every level and lr (:func:`pareto`; linear in log L0, None outside
    the front's range) and the winner."""
    out = []
    for arch, libs in raw.items():
        for l0 in FRONTIER_L0:
            row: dict[str, Any] = {"arch": arch, "l0": l0}
            for lib in ("sae", "saelens"):
                front = pareto(libs[lib])
                row[f"{lib}_fvu"] = interp_fvu(front, l0)
                row[f"{lib}_dead"] = interp_key(front, l0, "dead")
                row[f"{lib}_lrs"] = sorted({r["lr"] for r in front})
            a, b = row["sae_fvu"], row["saelens_fvu"]
            row["winner"] = None if a is None or b is None else ("sae" if a <= b else "saelens")
            row["rel"] = None if a is None or b is None else (a - b) / b
            out.append(row)
    return out


def frontier_table(rows: list[dict[str, Any]]) -> str:
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = ["| arch | L0 | sae FVU | SAELens FVU | FVU rel. diff | sae dead | SAELens dead | winner | lrs on the fronts |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['l0']:g} | {f(r['sae_fvu'], '.4f')} | {f(r['saelens_fvu'], '.4f')} | "
                     f"{f(r['rel'], '+.1%')} | {f(r['sae_dead'], '.1%')} | {f(r['saelens_dead'], '.1%')} | "
                     f"{r['winner'] or '- (outside a curve)'} | "
                     f"{'/'.join(map(format, r['sae_lrs'], ['g'] * 9))} vs {'/'.join(map(format, r['saelens_lrs'], ['g'] * 9))} |")
    return "\n".join(lines)


def plot(per_arch: dict[str, dict[str, list[dict[str, Any]]]], path: Path) -> None:
    from PIL import Image, ImageDraw

    cols, cw, ch, m = 3, 360, 280, 44
    rows_n = math.ceil(len(per_arch) / cols)
    img = Image.new("RGB", (cols * cw, rows_n * ch), "white")
    g = ImageDraw.Draw(img)
    colors = {"sae": (200, 40, 40), "saelens": (40, 80, 200)}
    for i, (arch, libs) in enumerate(per_arch.items()):
        ox, oy = (i % cols) * cw, (i // cols) * ch
        pts = [r for rs in libs.values() for r in rs]
        lx0, lx1 = math.log(min(r["l0"] for r in pts) * 0.8), math.log(max(r["l0"] for r in pts) * 1.25)
        fy0, fy1 = 0.0, max(r["fvu"] for r in pts) * 1.15

        def xy(l0: float, fvu: float, ox: int = ox, oy: int = oy, lx0: float = lx0, lx1: float = lx1,
               fy0: float = fy0, fy1: float = fy1) -> tuple[float, float]:
            return (ox + m + (math.log(l0) - lx0) / (lx1 - lx0) * (cw - 2 * m),
                    oy + ch - m - (fvu - fy0) / (fy1 - fy0) * (ch - 2 * m))

        g.line([(ox + m, oy + m // 2), (ox + m, oy + ch - m), (ox + cw - m // 2, oy + ch - m)], fill="black")
        g.text((ox + cw // 2 - 30, oy + 6), arch, fill="black")
        g.text((ox + cw // 2 - 40, oy + ch - 20), "L0 (log scale)", fill="black")
        for j in range(5):
            fv = fy1 * j / 4
            g.text((ox + 4, xy(1.0, fv)[1] - 6), f"{fv:.2f}", fill="black")
        for lib, rs in libs.items():
            line = [xy(r["l0"], r["fvu"]) for r in sorted(rs, key=lambda r: r["l0"])]
            if len(line) > 1:
                g.line(line, fill=colors[lib], width=2)
            for px, py in line:
                g.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colors[lib])
            for r in rs:
                px, py = xy(r["l0"], r["fvu"])
                g.text((px + 4, py - 12), f"{r['l0']:.0f}", fill=colors[lib])
    g.text((8, 4), "red: sae (ours)   blue: SAELens — held-out FVU of saved SAEs", fill="black")
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--docs", type=int, default=300, help="pydocs documents to cache")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--d-sae", type=int, default=1536)
    ap.add_argument("--lr-grid", default="1e-3,3e-3,1e-2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sae-bench-quality"))
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--ours-set", default="", help="ablation: swap one ingredient of our training, e.g. "
                    "init_encoder_scale=0.1, unit_norm_decoder=0, b_dec_init=zeros (see apply_ours_set)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--lib", help=argparse.SUPPRESS)
    ap.add_argument("--arch", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--heldout", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.lrs = [float(v) for v in a.lr_grid.split(",")]
    if a.worker:
        worker(a)
        return
    if a.quick:
        a.docs, a.steps, a.batch_size, a.d_sae, a.lrs = 40, 20, 128, 256, [3e-3]
    cache, heldout = build_caches(a.dir / f"docs{a.docs}", a.docs)
    archs = a.archs.split(",")
    # every (arch, library) result is kept in a partial file as soon as it is measured, so an
    # interrupted run (hours on 2 cores) resumes where it stopped; the key holds the settings
    partial_path = a.dir / "quality.partial.json"
    key = json.dumps([a.docs, a.steps, a.batch_size, a.d_sae, a.lrs, a.seed, a.device])
    partial = json.loads(partial_path.read_text()) if partial_path.is_file() else {}
    done = partial.setdefault(key, {})
    per_arch: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, Any]] = {}
    for arch in archs:
        per_arch[arch], raw[arch] = {}, {}
        for lib in ("sae", "saelens"):
            name = f"{arch}/{lib}" + (f"[{a.ours_set}]" if lib == "sae" and a.ours_set else "")
            name += " levels=" + "/".join(format(v, "g") for v in ARCHS[arch]["levels"])  # new levels: new runs
            if name not in done:
                done[name] = measure(a, lib, arch, cache, heldout)
                tmp = partial_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(partial))
                tmp.replace(partial_path)
            per_arch[arch][lib] = best_per_level(done[name])
            raw[arch][lib] = done[name]
    comparisons = [c for arch in archs for c in compare(arch, per_arch[arch]["sae"], per_arch[arch]["saelens"])]
    a.out.mkdir(parents=True, exist_ok=True)
    setting = (f"MiniLM layer 3, {a.docs} pydocs documents (10% of windows held out), d_sae={a.d_sae}, "
               f"batch={a.batch_size}, steps={a.steps}, lr grid={a.lrs}, device={a.device}, machine={cpu_model()}")
    front = frontier(raw)
    (a.out / "quality.json").write_text(json.dumps({"setting": setting, "results": per_arch, "comparisons": comparisons,
                                                    "frontier": front}, indent=2))
    plot(per_arch, a.out / "quality_fvu_l0.png")
    lines = [setting, "",
             "| arch | level | sae L0 | sae FVU | sae dead | sae lr | SAELens L0 | SAELens FVU | SAELens dead | SAELens lr "
             "| SAELens FVU at our L0 | FVU rel. diff |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in comparisons:
        o, t = c["ours"], c["saelens"]
        at = "-" if c["saelens_fvu_at_our_l0"] is None else f"{c['saelens_fvu_at_our_l0']:.4f}"
        rel = "-" if c["rel"] is None else f"{c['rel']:+.1%}"
        lines.append(f"| {c['arch']} | {c['level']:g} | {o['l0']:.1f} | {o['fvu']:.4f} | {o['dead']:.1%} | {o['lr']:g} | "
                     f"{t['l0']:.1f} | {t['fvu']:.4f} | {t['dead']:.1%} | {t['lr']:g} | {at} | {rel} |")
    lines += ["", "Matched-L0 frontier (each library's FVU-vs-L0 front over every level and lr, in log L0):", "",
              frontier_table(front)]
    table = "\n".join(lines)
    (a.out / "quality.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
