"""``sae quickstart OUT_DIR``: the whole main job, offline, in about two minutes on 2 CPU cores.

1. cache layer-3 residuals of the bundled all-MiniLM-L6-v2 on the ``pydocs`` corpus, through the
   ``hf`` adapter (plain transformers, the forward cut after block 3: the fast path);
2. train a small sweep (TopK, k ∈ {16, 32}, expansion 8) as one bank on the shared stream;
3. run the built-in analyses when they are installed (incl. ``downstream``: MiniLM's sentence
   embedding with the SAE spliced in);
4. print what was made, how good it is (FVU, held-out FVU, spliced cosine) and where the time went.

The defaults are sized for the two-minute budget (measured times in the README): 300 documents
(about 45k tokens) cached, 250 steps of 1024 tokens (about five epochs), which still gives a
meaningful SAE (held-out FVU about 0.2 at k=16, spliced cosine above 0.9); ``--max-examples``
and ``--steps`` scale it up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer


def quickstart(
    out_dir: Annotated[Path, typer.Argument(help="Where the cache, the run and its analyses go.")],
    steps: Annotated[int, typer.Option(help="Training steps for the sweep.")] = 250,
    max_examples: Annotated[int, typer.Option(help="Documents of the pydocs corpus to cache.")] = 300,
    layer: Annotated[int, typer.Option(help="Block whose output (the residual stream) is cached.")] = 3,
    context_size: Annotated[int, typer.Option(help="Tokens per window.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Training batch size (tokens).")] = 1024,
    model: Annotated[str, typer.Option(help="minilm (bundled, offline), a local HF model directory or a Hub id.")] = "minilm",
    adapter: Annotated[str, typer.Option(help="hf (plain transformers, fast) or tlens (transformer_lens).")] = "hf",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the main job end to end offline: cache MiniLM activations on Python docstrings,
    train a TopK sweep, analyse it, and print how to open it in the viewer. Re-running reuses
    the cache and replaces the run."""
    from sae_core import open_reader, run_training

    _check_options(steps=steps, max_examples=max_examples, batch_size=batch_size, adapter=adapter)
    t0 = time.perf_counter()
    times: dict[str, float] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = _cache(out_dir, model=model, adapter=adapter, layer=layer, context_size=context_size,
                   max_examples=max_examples, device=device, quiet=quiet)
    times["cache"] = time.perf_counter() - t0
    reader = open_reader(cache)
    n_tokens = reader.n_tokens("token")
    typer.echo(f"      {cache}  ({reader.n_examples} windows, {n_tokens:,} tokens, d_model {reader.meta.d_model})")
    typer.echo(f"[2/3] training TopK SAEs k in {{16, 32}}, expansion 8, {steps} steps, as one bank")
    config = _sweep_config(cache, reader.meta.d_model, n_tokens, out_dir, steps=steps, batch_size=batch_size,
                           device=device)
    t = time.perf_counter()
    run = run_training(config, progress=not quiet, overwrite=True)  # re-running the demo replaces its run
    times["train"] = time.perf_counter() - t
    t = time.perf_counter()
    analysed = _analyse(run, cache, device, quiet)
    times["analyses"] = time.perf_counter() - t
    typer.echo(f"[3/3] {'analyses written beside each SAE' if analysed else 'analyses: not installed, skipped'}")
    _print_table(run)
    typer.echo("")
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    typer.echo(f"done in {time.perf_counter() - t0:.0f} s ({spent}). Next:")
    _print_next_steps(run)


def _check_options(*, steps: int, max_examples: int, batch_size: int, adapter: str) -> None:
    """Refuse bad options before anything is loaded (a model load takes seconds)."""
    from sae_core import SAEError

    for name, value in (("--steps", steps), ("--max-examples", max_examples), ("--batch-size", batch_size)):
        if value < 1:
            raise SAEError(f"{name} must be >= 1, got {value}")
    if adapter not in ("hf", "tlens"):
        raise SAEError(f"--adapter must be hf or tlens, got {adapter!r}")


def _cache(out_dir: Path, *, model: str, adapter: str, layer: int, context_size: int, max_examples: int, device: str,
           quiet: bool) -> Path:
    """Step 1: cache the model's layer ``layer`` on the bundled pydocs corpus into ``OUT_DIR/cache``."""
    from sae_core import AdapterRequest, cache_activations

    label = "MiniLM" if model == "minilm" else model
    typer.echo(f"[1/3] caching {label} layer {layer} on pydocs ({max_examples} documents, adapter {adapter})")
    request = AdapterRequest(model=model, layers=[str(layer)], context_size=context_size, device=device)
    return cache_activations(adapter, request, "pydocs", out_dir / "cache", batch_size=32, max_examples=max_examples,
                             progress=not quiet)


def _sweep_config(cache: Path, d_model: int, n_tokens: int, out_dir: Path, *, steps: int, batch_size: int,
                  device: str) -> Any:
    """Step 2's sweep: TopK k ∈ {16, 32}, expansion 8, trained as one bank into ``OUT_DIR/run``
    (batches no larger than the cache; about 20 log lines and two checkpoints whatever ``steps``)."""
    from sae_core import expand_sweep

    return expand_sweep(
        str(cache), d_model,
        {"layer": 0, "tokens": "token", "batch_size": min(batch_size, n_tokens)},
        {"arch": "topk", "k": [16, 32], "exp_factor": 8, "lr": 1e-3},
        {"steps": steps, "log_every": max(1, steps // 20), "checkpoint_every": max(1, steps // 2), "device": device},
        str(out_dir / "run"),
    )


def _print_next_steps(run: Path) -> None:
    """The commands to try next on the run (those of sub-commands that are installed)."""
    from sae_core import SWEEP_FILE

    sweep = json.loads((run / SWEEP_FILE).read_text())
    commands = _installed_commands()
    if "view" in commands:
        typer.echo(f"  sae view {run}            # browse features in the viewer")
    typer.echo(f"  sae info {run}            # sweep summary as JSON")
    typer.echo(f"  sae info {run}/{sweep['saes'][0]['name']}   # one SAE: config and final metrics")
    if "export" in commands:
        typer.echo(f"  sae export {run}/{sweep['saes'][0]['name']} --format saelens --out exported/")
    typer.echo("  python -c \"from sae_core import load_sae; sae = load_sae('" + str(run / sweep["saes"][0]["name"]) + "')\"")


def _print_table(run: Path) -> None:
    """Final and held-out FVU, L0, dead latents and the downstream score of every SAE, written
    to ``<run>/quickstart.txt`` too (the README's table is that file's content).

    Dead latents are counted twice, each on the tokens it names: in training (silent for the
    last ``dead_window_tokens`` training tokens, the set AuxK revives) and by ``feature-stats``
    (never fired on any analysed token)."""
    from sae_core import SWEEP_FILE, filenames

    sweep = json.loads((run / SWEEP_FILE).read_text())
    rows, causal = [], False
    for s in sweep["saes"]:
        ckpt = run / s["path"]
        recon = ckpt / filenames.RECONSTRUCTION_FILE
        down = _read(ckpt / filenames.DOWNSTREAM_FILE)
        stats = _read(ckpt / filenames.FEATURE_STATS_SUMMARY_FILE)
        causal = causal or "ce_loss_recovered" in down
        score = down.get("embedding_cosine", down.get("ce_loss_recovered"))
        rows.append((s, json.loads(recon.read_text())["fvu"] if recon.exists() else None, score, stats))
    head = "CE recovered" if causal else "spliced cos"
    lines = [f"{'SAE':12s} {'d_sae':>6s} {'FVU':>7s} {'held-out FVU':>13s} {'L0':>6s} {'dead (train)':>13s} "
             f"{'dead (analysed)':>15s} {head:>12s}"]
    for s, heldout, score, stats in rows:
        f = s["final"]
        h = f"{heldout:13.3f}" if heldout is not None else f"{'-':>13s}"
        c = f"{score:12.3f}" if score is not None else f"{'-':>12s}"
        d = f"{stats['dead_frac']:15.1%}" if "dead_frac" in stats else f"{'-':>15s}"
        lines.append(f"{s['name']:12s} {s['d_sae']:6d} {f['fvu']:7.3f} {h} {f['l0']:6.1f} {f['dead_frac']:13.1%} {d} {c}")
    window = rows[0][0]["final"].get("dead_window_tokens") if rows else None
    analysed = rows[0][3] if rows else {}
    if window:
        lines.append(f"dead (train): silent for the last {window:,} training tokens (AuxK revives these)")
    if analysed.get("n_tokens"):
        split = analysed.get("split", "val")
        lines.append(f"dead (analysed): never fired on the {analysed['n_tokens']:,} analysed tokens (split {split})")
    if any(score is not None for *_, score, _ in rows):
        what = ("next-token CE loss recovered with the SAE spliced in" if causal
                else "cosine of the sentence embedding with vs without the SAE spliced in")
        lines.append(f"{head}: {what} (held-out documents)")
    typer.echo("")
    for line in lines:
        typer.echo(line)
    from sae_core import atomic_write_text

    atomic_write_text(run / "quickstart.txt", "\n".join(lines) + "\n")


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _installed_commands() -> set[str]:
    """Names of the `sae` sub-commands this installation provides."""
    from sae_core import build_app

    app = build_app()
    return {c.name or c.callback.__name__ for c in app.registered_commands if c.callback is not None}


def _analyse(run: Path, cache: Path, device: str, quiet: bool) -> bool:
    """Run the installed analyses (none installed: nothing to do)."""
    from sae_core import analyse_run, get_registry

    if not get_registry().names("analysis"):
        return False
    analyse_run(run, data=cache, device=device, progress=not quiet)
    return True


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
