"""``sae export``: write SAEs in another library's format (SAELens)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sae_core.errors import SAEError


def export(
    path: Annotated[Path, typer.Argument(help="One SAE checkpoint or a run directory.")],
    out: Annotated[Path, typer.Option(help="Output directory (one subdirectory per SAE for a run).")],
    format: Annotated[str, typer.Option("--format", help="Target format: saelens.")] = "saelens",
) -> None:
    """Export SAEs so other libraries can load them (SAELens: SAE.load_from_disk(DIR))."""
    from sae_core.checkpoint import find_checkpoints
    from sae_core.interop.saelens import export_saelens
    from sae_core.validate import check_output_dir

    if format != "saelens":
        raise SAEError(f"unknown export format {format!r}; supported: saelens")
    check_output_dir(out)
    ckpts = find_checkpoints(path)
    for ckpt in ckpts:
        target = out if len(ckpts) == 1 and (path / "cfg.json").is_file() else out / ckpt.name
        typer.echo(str(export_saelens(ckpt, target)))


def register(app: typer.Typer) -> None:
    app.command("export")(export)
