"""``sae report``: write a run's self-contained HTML report (see :mod:`sae_viewer.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    run: Annotated[Path, typer.Argument(help="A run directory from `sae train` (or one SAE checkpoint).")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default RUN/report.html); "
                                                  "its plots go to <stem>_files/ beside it.")] = None,
    features: Annotated[int, typer.Option(help="Latents shown per SAE.")] = 8,
    examples: Annotated[int, typer.Option(help="Top examples shown per latent.")] = 5,
) -> None:
    """Write a self-contained HTML report of a trained (and analysed) run: FVU-vs-L0 frontier,
    training curves, feature density, downstream metrics and top features with examples."""
    from sae_viewer.report import build_report

    path = build_report(run, out, n_features=features, n_examples=examples)
    typer.echo(str(path))
