"""``sae cache``: cache a model's activations on a dataset into an activation store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sae_core.commands.dynamic_help import RegistryHelpCommand
from sae_core.errors import SAEError
from sae_core.validate import check_device


def parse_kv(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` with a clear error for malformed pairs."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SAEError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def layer_names(layers: str | None, hook: list[str] | None) -> list[str]:
    """``--layers 3,-1`` and ``--hook NAME`` (repeatable) as one list of what to read."""
    layer_list = [x.strip() for x in layers.split(",") if x.strip()] if layers else []
    layer_list += list(hook or [])
    if not layer_list:
        raise SAEError("no layers given; pass --layers -2 (block indices) or --hook NAME")
    return layer_list


def cache(
    adapter: Annotated[str, typer.Option(help="Model adapter, one of the installed: {adapter}.")],
    model: Annotated[str, typer.Option(help="Model name for the adapter, e.g. ViT-B-32/openai, gpt2, minilm.")],
    data: Annotated[str, typer.Option(help="Dataset spec NAME:ARG, e.g. folder:/imgs, samples, pydocs, text:a.txt.")],
    out: Annotated[Path, typer.Option(help="Store root; the cache goes into a content-addressed subdirectory.")],
    layers: Annotated[
        str | None, typer.Option(help="Comma-separated layers/blocks, negative allowed: -2,-1.")
    ] = None,
    hook: Annotated[
        list[str] | None, typer.Option(help="Hook name (repeatable), e.g. blocks.6.hook_resid_post.")
    ] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Local weights file to load instead of the hub.")] = None,
    split: Annotated[str | None, typer.Option(help="Dataset split (hf datasets).")] = None,
    field: Annotated[str | None, typer.Option(help="Record field holding the image/text.")] = None,
    data_opt: Annotated[list[str] | None, typer.Option(help="Extra dataset option KEY=VALUE (repeatable).")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Cache at most this many examples.")] = None,
    context_size: Annotated[int | None, typer.Option(help="Tokens per window (text adapters).")] = None,
    dtype: Annotated[str, typer.Option(help="Storage dtype: fp32, fp16 or bf16.")] = "fp32",
    batch_size: Annotated[int, typer.Option(help="Examples per forward pass.")] = 64,
    num_workers: Annotated[int, typer.Option(help="Data-loading worker processes.")] = 0,
    device: Annotated[str, typer.Option(help="Torch device for the model: cpu, cuda, cuda:1, ...")] = "cpu",
    opt: Annotated[list[str] | None, typer.Option(help="Adapter-specific option KEY=VALUE (repeatable).")] = None,
    store: Annotated[str, typer.Option(help="Activation store, one of the installed: {store}.")] = "local",
    shard_examples: Annotated[int | None, typer.Option(help="Examples per shard (default: ~256 MB shards).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Cache activations of MODEL on DATA. Re-running the same command resumes an interrupted cache.
    Launch with `torchrun --nproc-per-node N -m sae_core cache ...` to split the dataset over N
    processes/GPUs writing one cache (see docs/scaling.md)."""
    from datetime import timedelta

    from sae_core import dist as sae_dist  # lazy: loads torch, numpy
    from sae_core.caching import run_cache  # lazy: loads torch, numpy
    from sae_core.protocols.adapter import AdapterRequest  # lazy: loads numpy

    check_device(device)  # before torchrun's process group picks a backend for it
    request = AdapterRequest(model=model, layers=layer_names(layers, hook), checkpoint=checkpoint, device=device,
                             context_size=context_size, options=parse_kv(opt, "--opt"))
    data_options: dict[str, object] = {"split": split, "field": field, **parse_kv(data_opt, "--data-opt")}
    # ranks may finish their blocks hours apart: the final barrier must outwait the slowest
    dist = sae_dist.init(device, timeout=timedelta(hours=72))
    try:
        path = run_cache(
            adapter, request, data, out, dtype=dtype, batch_size=batch_size, num_workers=num_workers,
            data_options=data_options, max_examples=max_examples, store=store, shard_examples=shard_examples,
            progress=not quiet, dist=dist,
        )
    finally:
        sae_dist.shutdown()
    if dist.is_main:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("cache", cls=RegistryHelpCommand)(cache)
