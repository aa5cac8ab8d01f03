"""``sae probe``: how well each latent, and a sparse linear probe on all latents, predict labels.

The same code path as ``sae analyze --only probe --option labels=...`` (the ``probe`` analysis,
:mod:`sae_core.analyses.probe`); results go beside each checkpoint (probe.json, probe.safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sae_core.analyses.runner import analyse_run


def probe(
    path: Annotated[Path, typer.Argument(help="A run directory or one SAE checkpoint.")],
    labels: Annotated[
        str,
        typer.Option(help="dataset (the cache dataset's classes, e.g. image subfolders), PATH.csv / PATH.jsonl "
                          "(example id -> label(s), or token positions per label), or regex:PATTERN (token labels)."),
    ],
    data: Annotated[Path | None, typer.Option(help="Cache directory (default: the one each SAE was trained on).")] = None,
    split: Annotated[str, typer.Option(help="Cache rows read: all (default), val (the SAE's validation examples), tail.")] = "all",
    test_fraction: Annotated[float, typer.Option(help="Examples held out to test the linear probe.")] = 0.25,
    l1: Annotated[float, typer.Option(help="L1 penalty of the linear probe, as a fraction of lambda_max.")] = 0.05,
    top: Annotated[int, typer.Option(help="Latents / probe weights listed per label in probe.json.")] = 20,
    max_examples: Annotated[int | None, typer.Option(help="Use at most this many cache rows.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Token labels: at most this many labelled tokens.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seed of the probe's train/test split of examples.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Tokens per encode batch.")] = 4096,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Probe SAE latents with labels; writes probe.json + probe.safetensors beside each checkpoint."""

    options = {"labels": labels, "split": split, "test_fraction": test_fraction, "probe_l1": l1, "probe_top": top,
               "probe_tokens": max_tokens, "probe_seed": seed}
    results = analyse_run(path, data=data, only=["probe"], device=device, batch_size=batch_size,
                          max_examples=max_examples, options=options, progress=not quiet)
    typer.echo(json.dumps(results, indent=2, default=float))


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
