"""``sae quickstart OUT_DIR``: the whole main job, offline, in a few minutes on a laptop CPU.

1. cache layer-3 residuals of the bundled all-MiniLM-L6-v2 on the ``pydocs`` corpus;
2. train a small sweep (TopK, k ∈ {16, 32}, expansion 8) as one bank on the shared stream;
3. run the built-in analyses when they are installed (incl. ``downstream``: MiniLM's sentence
   embedding with the SAE spliced in);
4. print what was made and how to look at it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer


def quickstart(
    out_dir: Annotated[Path, typer.Argument(help="Where the cache, the run and its analyses go.")],
    steps: Annotated[int, typer.Option(help="Training steps for the sweep.")] = 600,
    max_examples: Annotated[int, typer.Option(help="Documents of the pydocs corpus to cache.")] = 1500,
    layer: Annotated[int, typer.Option(help="MiniLM block whose residual stream is cached.")] = 3,
    context_size: Annotated[int, typer.Option(help="Tokens per window.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Training batch size (tokens).")] = 1024,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the main job end to end offline: cache MiniLM activations on Python docstrings,
    train a TopK sweep, analyse it, and print how to open it in the viewer. Re-running reuses
    the cache and replaces the run."""
    from sae_core import AdapterRequest, cache_activations, expand_sweep, open_reader, run_training

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    typer.echo(f"[1/3] caching MiniLM layer {layer} residuals on pydocs ({max_examples} documents)")
    request = AdapterRequest(model="minilm", layers=[str(layer)], context_size=context_size, device=device)
    cache = cache_activations("tlens", request, "pydocs", out_dir / "cache", batch_size=32, max_examples=max_examples,
                      progress=not quiet)
    reader = open_reader(cache)
    n_tokens = reader.n_tokens("token")
    typer.echo(f"      {cache}  ({reader.n_examples} windows, {n_tokens:,} tokens, d_model {reader.meta.d_model})")
    typer.echo(f"[2/3] training TopK SAEs k in {{16, 32}}, expansion 8, {steps} steps, as one bank")
    config = expand_sweep(
        str(cache), reader.meta.d_model,
        {"layer": 0, "tokens": "token", "batch_size": min(batch_size, n_tokens)},
        {"arch": "topk", "k": [16, 32], "exp_factor": 8, "lr": 1e-3},
        {"steps": steps, "log_every": max(1, steps // 20), "checkpoint_every": max(1, steps // 4), "device": device},
        str(out_dir / "run"),
    )
    run = run_training(config, progress=not quiet, overwrite=True)  # re-running the demo replaces its run
    analysed = _analyse(run, cache, device, quiet)
    typer.echo(f"[3/3] {'analyses written beside each SAE' if analysed else 'analyses: not installed, skipped'}")
    import json

    from sae_core import SWEEP_FILE, layout

    sweep = json.loads((run / SWEEP_FILE).read_text())
    typer.echo("")
    typer.echo(f"{'SAE':24s} {'d_sae':>6s} {'FVU':>7s} {'held-out FVU':>13s} {'L0':>6s} {'dead':>6s} {'spliced cos':>12s}")
    for s in sweep["saes"]:
        f = s["final"]
        recon = run / s["path"] / layout.RECONSTRUCTION_FILE
        heldout = f"{json.loads(recon.read_text())['fvu']:13.3f}" if recon.exists() else f"{'-':>13s}"
        down_path = run / s["path"] / layout.DOWNSTREAM_FILE
        down = json.loads(down_path.read_text()) if down_path.exists() else {}
        cos = f"{down['embedding_cosine']:12.3f}" if "embedding_cosine" in down else f"{'-':>12s}"
        typer.echo(f"{s['name']:24s} {s['d_sae']:6d} {f['fvu']:7.3f} {heldout} {f['l0']:6.1f} {f['dead_frac']:6.1%} {cos}")
    if analysed:
        typer.echo("      spliced cos: cosine of MiniLM's sentence embedding with vs without the SAE spliced in")
    typer.echo("")
    typer.echo(f"done in {time.perf_counter() - t0:.0f} s. Next:")
    commands = _installed_commands()
    if "view" in commands:
        typer.echo(f"  sae view {run}            # browse features in the viewer")
    typer.echo(f"  sae info {run}            # sweep summary as JSON")
    typer.echo(f"  sae info {run}/{sweep['saes'][0]['name']}   # one SAE: config and final metrics")
    if "export" in commands:
        typer.echo(f"  sae export {run}/{sweep['saes'][0]['name']} --format saelens --out exported/")
    typer.echo("  python -c \"from sae_core import load_sae; sae = load_sae('" + str(run / sweep["saes"][0]["name"]) + "')\"")


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
