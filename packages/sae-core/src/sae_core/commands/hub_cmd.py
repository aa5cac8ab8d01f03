"""``sae upload`` and ``sae download``: share SAEs through the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sae_core.hub import download as do_download
from sae_core.hub import upload as do_upload
from sae_core.interop.detect import foreign_hint


def upload(
    path: Annotated[Path, typer.Argument(help="A run directory or one SAE checkpoint.")],
    repo: Annotated[str, typer.Option(help="Hub repo id, user/name.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to commit to.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub endpoint (default: HF_ENDPOINT or huggingface.co).")] = None,
) -> None:
    """Upload SAEs (one folder each) with a generated model card."""

    typer.echo(do_upload(path, repo, private=private, revision=revision, endpoint=endpoint))


def download(
    repo: Annotated[str, typer.Argument(help="Hub repo id, user/name.")],
    out: Annotated[Path, typer.Option(help="Directory to download into.")],
    sae: Annotated[str | None, typer.Option("--sae", "--subfolder", help="Only this SAE folder (a sparsify repo: one hook).")] = None,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub endpoint (default: HF_ENDPOINT or huggingface.co).")] = None,
) -> None:
    """Download an SAE repo (or one SAE of it)."""

    got = do_download(repo, out, sae=sae, revision=revision, endpoint=endpoint)
    typer.echo(str(got))
    hint = foreign_hint(got / sae if sae else got)
    if hint:
        typer.echo(f"note: {hint}", err=True)


def register(app: typer.Typer) -> None:
    app.command("upload")(upload)
    app.command("download")(download)
