"""``sae import``: convert SAEs another library wrote (SAELens, sparsify, dictionary_learning,
saev) into our checkpoint format, so every command reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sae_core.interop.importer import import_checkpoints
from sae_core.validate import check_output_dir


def import_(
    path: Annotated[Path, typer.Argument(help="A peer checkpoint (folder, or a saev sae.pt) or a folder of them.")],
    out: Annotated[Path, typer.Option(help="Output directory (one subdirectory per SAE when PATH holds several).")],
    layer: Annotated[str | None, typer.Option(help="The layer/hook name in your caches that the SAE reads "
                                                   "(default: what the peer recorded, e.g. sparsify's folder name).")] = None,
    model: Annotated[str | None, typer.Option(help="The model it was trained on (default: what the peer recorded).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
) -> None:
    """Convert SAEs from SAELens, EleutherAI sparsify, dictionary_learning or saev (recognised by
    content) into sae checkpoints, with their provenance in cfg.json. All are read before any is
    written."""

    check_output_dir(out)
    for written in import_checkpoints(path, out, overwrite=overwrite, layer=layer, model=model):
        typer.echo(str(written))


def register(app: typer.Typer) -> None:
    app.command("import")(import_)
