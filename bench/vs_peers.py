"""sae vs its peers (SAELens, EleutherAI sparsify): the same TopK SAEs on the same activations.

    uv run python bench/vs_peers.py [--data minilm|synthetic] [--steps 200] [--device cpu]
                                    [--libs sae,saelens,sparsify] [--pareto-ks 16,32,64]

Every library gets: the same cache and the same batches in the same order (each peer reads our
store's shuffled stream with the same seed), the same k, d_sae, batch size, lr, Adam betas, step
count and seed, no lr warmup/decay, no input normalisation, AuxK coefficient 1/32.
Unavoidable differences (stated in docs/benchmarks.md): initialisation (ours: tied, unit-norm
decoder and geometric-median b_dec; SAELens: its TopK init with decoder norm 0.1 and
decoder-norm rescaling of activations; sparsify: ``nn.Linear`` encoder, decoder = its unit-norm
transpose, b_dec = the mean of the first batch) and the decoder constraint (ours and sparsify:
unit norm + gradient projection; SAELens: rescaling by decoder norm).

sparsify's own ``Trainer`` hooks a language model; it has no entry point for cached activations,
so its worker drives ``sparsify.SparseCoder`` with the steps of ``Trainer.fit``'s ``fvu`` loss:
b_dec from the first batch, decoder rows renormalised before each forward, loss ``fvu +
auxk_alpha * auxk_loss`` from ``SparseCoder.forward`` (its dead mask: tokens since a latent
fired > the same dead window as ours), the decoder gradient's radial part removed, one
``torch.optim.Adam`` over all SAEs (sparsify's ``adam`` optimizer) at a constant lr (its linear
warmup/decay is left out, as for the others). A sweep is several SparseCoders on each batch, one
after another, as its trainer does with several hookpoints or seeds.

Every measured configuration runs in a fresh subprocess (peak RSS / CUDA memory per run). FVU and
L0 are measured on the same held-out batch (the last batch of epoch 0, never trained on). The
table is printed last; results also go to --out as JSON, markdown and an FVU-vs-L0 PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import cpu_model, peak_rss_mb, synthetic_cache
from sae_core.protocols import BatchPlan

HERE = Path(__file__).resolve().parent
LIBS = ("sae", "saelens", "sparsify")
LABELS = {"sae": "sae", "saelens": "SAELens", "sparsify": "sparsify"}


# -- data ------------------------------------------------------------------------------------------

def build_cache(kind: str, root: Path, quick: bool) -> Path:
    if kind == "minilm":
        from sae_core.caching import run_cache
        from sae_core.protocols import AdapterRequest

        request = AdapterRequest(model="minilm", layers=["3"], context_size=64)
        return run_cache("tlens", request, "pydocs", root, batch_size=32, max_examples=150 if quick else 900, progress=False)
    d, n_true, n = 768, 4096, (40_000 if quick else 400_000)
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(n_true, d, generator=gen)
    feats /= feats.norm(dim=1, keepdim=True)

    def planted(m: int) -> torch.Tensor:
        idx = torch.randint(0, n_true, (m, 24), generator=gen)  # 24 true features per sample
        return (torch.rand(m, 24, generator=gen)[..., None] * feats[idx]).sum(1)  # (m, d)

    return synthetic_cache(root, adapter="synthetic", model=f"planted-{d}", spec=f"planted:{n}", d=d, n=n,
                           chunk=20_000, rows=planted)


def tokens_filter(reader: Any) -> str:
    return "token" if "token" in reader.meta.token_kinds else "all"


def heldout(reader: Any, bs: int, seed: int) -> torch.Tensor:
    n_batches = reader.n_tokens(tokens_filter(reader)) // bs
    plan = BatchPlan(bs, layers=[0], tokens=tokens_filter(reader), seed=seed, start_batch=n_batches - 1)
    return next(reader.batches(plan))[:, 0]


def fvu_l0(recon: torch.Tensor, x: torch.Tensor, l0: float) -> dict[str, float]:
    fvu = float(((recon.float() - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    return {"fvu": fvu, "l0": l0}


def evaluate(encode, decode, x: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        f = encode(x)
        recon = decode(f)
    return fvu_l0(recon, x, float((f > 0).float().sum(-1).mean()))


def stream(reader: Any, a: argparse.Namespace):
    """Our store's shuffled batches ``(batch, d)``, epoch after epoch: what every library trains on."""
    epoch = 0
    while True:
        plan = BatchPlan(a.batch_size, layers=[0], tokens=tokens_filter(reader), seed=a.seed, epoch=epoch,
                         device=a.device)
        for b in reader.batches(plan):
            yield b[:, 0]
        epoch += 1


# -- workers (one measured configuration each) ----------------------------------------------------
def worker_ours(a: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from sae_core.checkpoint import find_checkpoints, load_sae
    from sae_core.stores import open_reader
    from sae_core.train import expand, run_training

    reader = open_reader(a.cache)
    ks = [int(k) for k in a.ks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = expand(a.cache, reader.meta.d_model,
                     {"layer": 0, "batch_size": a.batch_size, "tokens": tokens_filter(reader), "normalize": False,
                      "val_fraction": 0.0},
                     {"arch": "topk", "k": ks, "d_sae": a.d_sae, "lr": a.lr, "aux_coeff": 1 / 32},
                     {"steps": a.steps, "seed": a.seed, "log_every": a.steps, "lr_warmup_steps": 1, "lr_decay_frac": 0.0,
                      "device": a.device, "checkpoint_every": a.steps + 1},
                     f"{tmp}/run")
        run = run_training(cfg, progress=False)
        x = heldout(reader, a.batch_size, a.seed).to(a.device)
        evals = []
        for ckpt in find_checkpoints(run):
            sae = load_sae(ckpt, device=a.device)
            last = json.loads((ckpt / "metrics.jsonl").read_text().splitlines()[-1])
            evals.append({"k": sae.cfg.hyper["k"], **evaluate(sae.encode, sae.decode, x)})
        seconds = last["samples"] / last["samples_per_s"]
    return {"seconds": seconds, "evals": evals}


def worker_saelens(a: argparse.Namespace) -> dict[str, Any]:
    from sae_core.stores import open_reader
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    reader = open_reader(a.cache)
    d = reader.meta.d_model
    seconds, evals = 0.0, []
    for k in [int(k) for k in a.ks.split(",")]:  # SAELens trains one SAE at a time
        torch.manual_seed(a.seed)
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=a.d_sae, k=k, aux_loss_coefficient=1 / 32,
                                                    device=a.device, dtype="float32"))

        tcfg = SAETrainerConfig(total_training_samples=a.steps * a.batch_size, train_batch_size_samples=a.batch_size,
                                lr=a.lr, lr_end=a.lr, lr_scheduler_name="constant", lr_warm_up_steps=0, device=a.device,
                                logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0, save_final_checkpoint=False)
        trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=stream(reader, a))
        t0 = time.perf_counter()
        trainer.fit()
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        x = heldout(reader, a.batch_size, a.seed).to(a.device)
        evals.append({"k": k, **evaluate(sae.encode, sae.decode, x)})
    return {"seconds": seconds, "evals": evals}


def worker_sparsify(a: argparse.Namespace) -> dict[str, Any]:
    if not a.device.startswith("cuda"):
        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # its Triton decoder kernel is CUDA-only
    from sae_core.stores import open_reader
    from sparsify import SaeConfig, SparseCoder

    reader = open_reader(a.cache)
    d, bs = reader.meta.d_model, a.batch_size
    ks = [int(k) for k in a.ks.split(",")]
    torch.manual_seed(a.seed)
    saes = [SparseCoder(d, SaeConfig(k=k, num_latents=a.d_sae), device=a.device, dtype=torch.float32) for k in ks]
    opt = torch.optim.Adam([{"params": sae.parameters(), "lr": a.lr} for sae in saes])
    dead_after = min(1_000_000, max(bs, a.steps * bs // 10))  # our TrainSettings.dead_window, in tokens
    since_fired = [torch.zeros(a.d_sae, dtype=torch.long, device=a.device) for _ in saes]
    batches = stream(reader, a)
    t0 = time.perf_counter()
    for step in range(a.steps):
        x = next(batches)  # (batch, d)
        fired = [torch.zeros(a.d_sae, dtype=torch.bool, device=a.device) for _ in saes]
        for i, sae in enumerate(saes):  # one SparseCoder after another on the same batch
            if step == 0:
                sae.b_dec.data = x.mean(0)
            sae.set_decoder_norm_to_unit_norm()
            out = sae(x, dead_mask=since_fired[i] > dead_after)
            (out.fvu + out.auxk_loss / 32).backward()
            fired[i][out.latent_indices.flatten()] = True
        for sae in saes:
            sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for counts, f in zip(since_fired, fired, strict=True):
                counts += bs
                counts[f] = 0
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    x = heldout(reader, bs, a.seed).to(a.device)
    evals = []
    with torch.no_grad():
        for k, sae in zip(ks, saes, strict=True):
            enc = sae.encode(x)
            evals.append({"k": k, **fvu_l0(sae.decode(enc.top_acts, enc.top_indices), x,
                                           float((enc.top_acts > 0).float().sum(-1).mean()))})
    return {"seconds": seconds, "evals": evals}


WORKERS = {"sae": worker_ours, "saelens": worker_saelens, "sparsify": worker_sparsify}


def worker(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    out = WORKERS[a.lib](a)
    n = len(a.ks.split(","))
    out.update({
        "lib": a.lib, "ks": a.ks, "n_saes": n,
        "samples_per_s": a.steps * a.batch_size * (1 if a.lib == "sae" else n) / out["seconds"],
        "per_sae_samples_per_s": a.steps * a.batch_size * n / out["seconds"],
        "peak_mb": (torch.cuda.max_memory_allocated() / 2**20 if a.device.startswith("cuda")
                    else peak_rss_mb()),
    })
    print("RESULT " + json.dumps(out))


# -- driver ----------------------------------------------------------------------------------------
def measure(a: argparse.Namespace, cache: Path, lib: str, ks: list[int], steps: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", "--lib", lib, "--cache", str(cache), "--ks", ",".join(map(str, ks)),
           "--steps", str(steps), "--batch-size", str(a.batch_size), "--d-sae", str(a.d_sae), "--lr", str(a.lr),
           "--seed", str(a.seed), "--device", a.device, "--threads", str(a.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{lib} run failed:\n{res.stderr[-3000:]}")
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT "))
    print(f"  measured {lib} k={ks} steps={steps}", file=sys.stderr)
    return json.loads(line[len("RESULT "):])


def plot(results: dict[str, list[dict]], path: Path) -> None:
    from PIL import Image, ImageDraw

    w, h, m = 640, 440, 60
    img = Image.new("RGB", (w, h), "white")
    g = ImageDraw.Draw(img)
    pts = [(e["l0"], e["fvu"]) for rs in results.values() for e in rs]
    x0, x1 = 0, max(p[0] for p in pts) * 1.1
    y0, y1 = 0, max(p[1] for p in pts) * 1.15

    def xy(l0: float, fvu: float) -> tuple[float, float]:
        return m + (l0 - x0) / (x1 - x0) * (w - 2 * m), h - m - (fvu - y0) / (y1 - y0) * (h - 2 * m)

    g.line([(m, m), (m, h - m), (w - m, h - m)], fill="black", width=2)
    for i in range(6):
        fv = y0 + (y1 - y0) * i / 5
        lx = x0 + (x1 - x0) * i / 5
        g.text((8, xy(0, fv)[1] - 6), f"{fv:.2f}", fill="black")
        g.text((xy(lx, 0)[0] - 8, h - m + 8), f"{lx:.0f}", fill="black")
    g.text((w // 2 - 20, h - 24), "L0", fill="black")
    g.text((8, 20), "FVU (held-out batch)", fill="black")
    colors = {"sae": (200, 40, 40), "saelens": (40, 80, 200), "sparsify": (30, 150, 60)}
    for lib, rs in results.items():
        rs = sorted(rs, key=lambda e: e["l0"])
        line = [xy(e["l0"], e["fvu"]) for e in rs]
        if len(line) > 1:
            g.line(line, fill=colors[lib], width=2)
        for (px, py), e in zip(line, rs, strict=True):
            g.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colors[lib])
            g.text((px + 6, py - 14), f"k={e['k']}", fill=colors[lib])
    for i, lib in enumerate(results):
        g.rectangle([w - 170, 20 + 18 * i, w - 160, 30 + 18 * i], fill=colors[lib])
        g.text((w - 150, 18 + 18 * i), {"sae": "sae (ours)"}.get(lib, version_label(lib)), fill="black")
    img.save(path)


def version_label(lib: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"sae": "sae-core", "saelens": "sae-lens", "sparsify": "eai-sparsify"}[lib]
    try:
        return f"{LABELS[lib]} {version(dist)}"
    except PackageNotFoundError:
        return LABELS[lib]


def markdown(a: argparse.Namespace, d_in: int, single: dict, pareto: dict, sweep: dict) -> str:
    peers = [lib for lib in single if lib != "sae"]
    lines = [
        f"data={a.data} d_in={d_in} d_sae={a.d_sae} batch={a.batch_size} steps={a.steps} (sweep {a.sweep_steps}) "
        f"lr={a.lr} device={a.device} machine={cpu_model()} load={os.getloadavg()[0]:.1f}",
        "",
        "| setting | library | per-SAE samples/s | peak MB | FVU | L0 | sae speed-up vs this |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [("one TopK SAE (k=32)", single, True), (f"{len(SWEEP_KS)} TopK SAEs (k={SWEEP_KS[0]}..{SWEEP_KS[-1]})", sweep, False)]
    for name, res, with_eval in rows:
        for lib, r in res.items():
            e = r["evals"][0] if with_eval else None
            fvu, l0 = (f"{e['fvu']:.4f}", f"{e['l0']:.1f}") if e else ("-", "-")
            sp = "" if lib == "sae" or "sae" not in res else \
                f"{res['sae']['per_sae_samples_per_s'] / r['per_sae_samples_per_s']:.2f}x"
            lines.append(f"| {name} | {LABELS[lib]} | {r['per_sae_samples_per_s']:,.0f} | {r['peak_mb']:,.0f} | {fvu} | {l0} | {sp} |")
    if "sae" in pareto and peers:
        lines += ["", "| k | sae FVU | sae L0 | " + " | ".join(f"{LABELS[p]} FVU | {LABELS[p]} L0 | sae vs {LABELS[p]}"
                                                          for p in peers) + " |",
                  "| ---: " * (3 + 3 * len(peers)) + "|"]
        by_k = {lib: {e["k"]: e for e in rs} for lib, rs in pareto.items()}
        for k in sorted(by_k["sae"]):
            eo = by_k["sae"][k]
            cells = [f"{k}", f"{eo['fvu']:.4f}", f"{eo['l0']:.1f}"]
            for p in peers:
                et = by_k[p][k]
                cells += [f"{et['fvu']:.4f}", f"{et['l0']:.1f}", f"{(eo['fvu'] - et['fvu']) / et['fvu']:+.1%}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SWEEP_KS = [16, 24, 32, 40, 48, 56, 64, 72]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["minilm", "synthetic"], default="minilm")
    ap.add_argument("--libs", default=",".join(LIBS), help="comma-separated subset of " + ",".join(LIBS))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--sweep-steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--d-sae", type=int, default=None)
    ap.add_argument("--pareto-ks", default="16,32,64", help="k of the single-SAE FVU-vs-L0 comparison (32 is always run)")
    # SAELens's best of {1e-3, 3e-3, 1e-2} on the MiniLM cache (k=32/64, 300 steps); see docs/benchmarks.md
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke test)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sae-bench-vs-peers"))
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--lib", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ks", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    libs = [lib.strip() for lib in a.libs.split(",")]
    unknown = [lib for lib in libs if lib not in LIBS]
    if unknown:
        raise SystemExit(f"--libs: unknown library {unknown[0]!r}; choose from {', '.join(LIBS)}")
    gpu = a.device.startswith("cuda")
    a.steps = a.steps or (20 if a.quick else (2000 if gpu else 300))
    a.sweep_steps = a.sweep_steps or (10 if a.quick else (500 if gpu else 60))
    a.batch_size = a.batch_size or (256 if a.quick else (4096 if gpu else 1024))
    cache = build_cache(a.data, a.dir / a.data, a.quick)
    from sae_core.stores import open_reader

    d_in = open_reader(cache).meta.d_model
    a.d_sae = a.d_sae or (16384 if gpu else 8 * d_in)
    k_single = 32
    pareto_ks = [k for k in (int(x) for x in a.pareto_ks.split(",")) if k != k_single]
    single = {lib: measure(a, cache, lib, [k_single], a.steps) for lib in libs}
    pareto = {lib: [single[lib]["evals"][0]] + [measure(a, cache, lib, [k], a.steps)["evals"][0] for k in pareto_ks]
              for lib in libs}
    sweep = {lib: measure(a, cache, lib, SWEEP_KS, a.sweep_steps) for lib in libs}
    a.out.mkdir(parents=True, exist_ok=True)
    results = {"machine": cpu_model(), "device": a.device, "data": a.data, "d_in": d_in, "d_sae": a.d_sae,
               "batch_size": a.batch_size, "steps": a.steps, "sweep_steps": a.sweep_steps, "lr": a.lr,
               "versions": {lib: version_label(lib) for lib in libs},
               "single": single, "pareto": pareto, "sweep": sweep}
    (a.out / "vs_peers.json").write_text(json.dumps(results, indent=2))
    plot(pareto, a.out / "vs_peers_fvu_l0.png")
    table = markdown(a, d_in, single, pareto, sweep)
    (a.out / "vs_peers.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
