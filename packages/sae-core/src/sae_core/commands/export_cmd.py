"""``sae export``: write SAEs in another library's format (SAELens, or a plugin's format)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sae_core.commands.dynamic_help import RegistryHelpCommand
from sae_core.interop.export import export_checkpoints
from sae_core.validate import check_output_dir


def export(
    path: Annotated[Path, typer.Argument(help="One SAE checkpoint or a run directory.")],
    out: Annotated[Path, typer.Option(help="Output directory (one subdirectory per SAE for a run).")],
    format: Annotated[str, typer.Option("--format", help="Target format, one of: {exporter}.")] = "saelens",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
) -> None:
    """Export SAEs so other libraries can load them (SAELens: SAE.load_from_disk(DIR)). Every SAE
    is checked first; a run is written completely or not at all."""

    check_output_dir(out)
    for written in export_checkpoints(path, out, format=format, overwrite=overwrite):
        typer.echo(str(written))


def register(app: typer.Typer) -> None:
    app.command("export", cls=RegistryHelpCommand)(export)
