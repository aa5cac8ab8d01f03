"""``sae hooks``: list the layer/hook names a model offers through an adapter.

Asks the adapter (:meth:`ModelAdapter.hook_names`) for the names ``sae cache --hook`` accepts, so
users pick ``encoder.layer.3.intermediate`` or ``blocks.6.attn.hook_z`` from the model's own
list instead of guessing.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sae_core.commands.cache_cmd import parse_kv


def hooks(
    adapter: Annotated[str, typer.Option(help="Model adapter plugin, e.g. hf, tlens, timm (see `sae plugins`).")],
    model: Annotated[str, typer.Option(help="Model name for the adapter, e.g. minilm, gpt2, a local directory.")],
    match: Annotated[str | None, typer.Option(help="Only names containing this substring.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Local weights file to load instead of the hub.")] = None,
    device: Annotated[str, typer.Option(help="Torch device for the model.")] = "cpu",
    opt: Annotated[list[str] | None, typer.Option(help="Adapter-specific option KEY=VALUE (repeatable).")] = None,
) -> None:
    """List the hookable layer names of MODEL, one per line (usable as `sae cache --hook NAME`)."""
    from sae_core.caching import build_adapter  # lazy: loads torch, numpy
    from sae_core.protocols.adapter import AdapterRequest  # lazy: loads numpy

    request = AdapterRequest(model=model, layers=[], checkpoint=checkpoint, device=device,
                             options=parse_kv(opt, "--opt"))
    names = build_adapter(adapter, request).hook_names()
    for name in names:
        if match is None or match in name:
            typer.echo(name)


def register(app: typer.Typer) -> None:
    app.command("hooks")(hooks)
