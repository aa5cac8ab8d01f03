"""``sae train``: train one SAE or a whole sweep on a cache, or live on a running model.

The flags, their help and the sweep keys they set are one table,
:class:`~sae_core.train.flags.TrainFlags`; the command's signature is built from it
(:func:`cli_signature`), so the command itself only parses, checks and runs.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from sae_core.commands.dynamic_help import RegistryHelpCommand
from sae_core.stores import open_reader
from sae_core.train.flags import Tables, TrainFlags
from sae_core.validate import check_device


def train(**values: Any) -> None:
    """Train SAEs on a cache: one from flags, or a grid from --sweep. All SAEs of a data group
    train together on each batch, read once. With --layer-out they are transcoders: they encode
    --layer and reconstruct --layer-out of the same cache. With --adapter/--model/--layers and a
    dataset as --data, train live on the running model instead, without a cache (--also-cache
    writes one as it goes). Launch with `torchrun --nproc-per-node N -m sae_core train ...` to
    spread it over N processes/GPUs (see docs/scaling.md)."""
    flags = TrainFlags(**values)
    flags.check()
    if flags.resume:
        _resume(flags)
    elif flags.adapter is not None:
        _train_live(flags, flags.sweep_tables())
    else:
        _train_cache(flags, flags.sweep_tables())


def cli_signature(table: type) -> inspect.Signature:
    """The typer signature of a flags dataclass: one ``Annotated[type, typer.Option(...)]``
    keyword per field, with its default (none: a required option)."""
    hints = get_type_hints(table)
    params = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                          default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
                          annotation=Annotated[hints[f.name], typer.Option(*f.metadata["decls"], help=f.metadata["help"])])
        for f in dataclasses.fields(table)
    ]
    return inspect.Signature(params, return_annotation=None)


train.__signature__ = cli_signature(TrainFlags)  # type: ignore[attr-defined]


def _launch(device: str, body: Callable[[Any], Any]) -> None:
    """Run ``body(dist)`` in this process's place of a ``torchrun`` job (or alone); rank 0 prints
    what it returns (the run directory)."""
    from sae_core import dist as sae_dist  # lazy: loads torch, numpy

    dist = sae_dist.init(device)
    try:
        path = body(dist)
    finally:
        sae_dist.shutdown()
    if dist.is_main:
        typer.echo(str(path))


def _resume(flags: TrainFlags) -> None:
    """``--resume``: continue the run in --out from its last state."""
    from sae_core.train import run_training  # lazy: loads torch, numpy

    config = flags.resumed_config()

    def body(dist: Any) -> Path:
        run_training(config, progress=not flags.quiet, resume=True, dist=dist, allow_incomplete=flags.allow_incomplete)
        return flags.out

    _launch(config.train.device, body)


def _train_cache(flags: TrainFlags, tables: Tables) -> None:
    """A new run on the cache --data."""
    from sae_core.train import expand, run_training  # lazy: loads torch, numpy

    reader = open_reader(Path(str(flags.data)))
    flags.set_buffer(tables, reader.meta.tokens_per_example, live=False)
    config = expand(str(flags.data), reader.meta.d_model, tables["data"], tables["sae"], tables["train"],
                    str(flags.out))
    _launch(config.train.device, lambda dist: run_training(
        config, progress=not flags.quiet, dist=dist, overwrite=flags.overwrite,
        allow_incomplete=flags.allow_incomplete))


def _train_live(flags: TrainFlags, tables: Tables) -> None:
    """``sae train --adapter A --model M --layers L --data DATASET``: train on the running model."""
    from sae_core.train import expand, run_training  # lazy: loads torch, numpy
    from sae_core.train.live.source import LiveSource  # lazy: loads torch, numpy

    live = flags.live_config()
    device = str(tables["train"].get("device", "cpu"))
    check_device(device)

    def body(dist: Any) -> Path:
        source = LiveSource(live, device=device, dist=dist, progress=not flags.quiet)
        try:
            flags.set_buffer(tables, source.meta.tokens_per_example, live=True)
            config = expand(str(source.cache_path or ""), source.meta.d_model, tables["data"], tables["sae"],
                            tables["train"], str(flags.out), live=live)
        except BaseException:
            source.close()
            raise
        path = run_training(config, progress=not flags.quiet, dist=dist, overwrite=flags.overwrite, source=source)
        rate = source.throughput()
        if dist.is_main and not flags.quiet and rate is not None:
            print(f"live: the model computed {source.model_rows} rows, {source.model_tokens} tokens, at "
                  f"{rate:,.0f} tokens/s while training" + (f"; cache {source.cache_path}" if source.cache_path
                                                              is not None else ""), file=sys.stderr)
        return path

    _launch(device, body)


def register(app: typer.Typer) -> None:
    app.command("train", cls=RegistryHelpCommand)(train)
