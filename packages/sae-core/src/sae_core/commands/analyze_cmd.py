"""``sae analyze``: feature statistics, top examples, reconstruction and downstream metrics beside each SAE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sae_core.analyses.runner import analyse_run
from sae_core.commands.cache_cmd import parse_kv
from sae_core.commands.dynamic_help import RegistryHelpCommand


def analyze(
    path: Annotated[Path, typer.Argument(help="A run directory or one SAE checkpoint.")],
    data: Annotated[Path | None, typer.Option(help="Cache directory (default: the one each SAE was trained on).")] = None,
    only: Annotated[list[str] | None, typer.Option(help="Run only this analysis (repeatable), one of the installed: {analysis}.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Use at most this many cache rows.")] = None,
    batch_size: Annotated[int, typer.Option(help="Tokens per encode batch.")] = 4096,
    k: Annotated[int, typer.Option(help="Top examples kept per latent.")] = 16,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", help="Analysis option KEY=VALUE (repeatable), e.g. downstream_rows=64, heldout_frac=0.2."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Analyse on a cache whose `sae cache` was interrupted.")
    ] = False,
) -> None:
    """Analyse SAEs against a cache; results are written beside each checkpoint."""

    options: dict[str, str | int] = {"k": k, **parse_kv(option, "--option")}
    results = analyse_run(path, data=data, only=only, device=device, batch_size=batch_size,
                          max_examples=max_examples, options=options, progress=not quiet,
                          allow_incomplete=allow_incomplete)
    typer.echo(json.dumps(results, indent=2, default=float))


def register(app: typer.Typer) -> None:
    app.command("analyze", cls=RegistryHelpCommand)(analyze)
