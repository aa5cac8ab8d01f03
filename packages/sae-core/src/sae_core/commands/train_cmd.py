"""``sae train``: train one SAE or a whole sweep on a cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from sae_core.commands.dynamic_help import RegistryHelpCommand
from sae_core.errors import SAEError


def train(
    out: Annotated[Path, typer.Option(help="Run directory (one subdirectory per SAE).")],
    data: Annotated[Path | None, typer.Option(help="Cache directory printed by `sae cache`.")] = None,
    sweep: Annotated[Path | None, typer.Option(help="TOML sweep: lists are swept as a grid.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last state.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete the run already in --out (state, checkpoints) and start anew.")
    ] = False,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Train on a cache whose `sae cache` was interrupted.")
    ] = False,
    layer: Annotated[str | None, typer.Option(help="Layer index (negative allowed) or name in the cache.")] = None,
    tokens: Annotated[str | None, typer.Option(help="Token filter: all, cls, patch, register, token.")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture (default topk), one of the installed: {architecture}.")] = None,
    k: Annotated[int | None, typer.Option(help="Active latents per token (topk family).")] = None,
    exp_factor: Annotated[float | None, typer.Option(help="d_sae = exp_factor * d_in.")] = None,
    d_sae: Annotated[int | None, typer.Option(help="Dictionary size (overrides --exp-factor).")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    l1_coeff: Annotated[float | None, typer.Option(help="L1 coefficient (relu, gated).")] = None,
    l0_coeff: Annotated[float | None, typer.Option(help="L0 coefficient (jumprelu).")] = None,
    target_l0: Annotated[float | None, typer.Option(help="Target L0 (jumprelu target mode).")] = None,
    hyper: Annotated[
        list[str] | None,
        typer.Option(help="Any architecture hyperparameter KEY=VALUE (repeatable), e.g. aux_k=64, bandwidth=0.3."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Tokens per batch.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (init and data order).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ...")] = None,
    log_every: Annotated[int | None, typer.Option(help="Steps between metric lines.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between resumable states.")] = None,
    normalize: Annotated[bool | None, typer.Option("--normalize/--no-normalize", help="Scale inputs to E||x||=sqrt(d).")] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(help="Fraction of whole examples held out for validation (default 0.02; 0: none)."),
    ] = None,
    eval_every: Annotated[int | None, typer.Option(help="Steps between validation metrics (default: --log-every).")] = None,
    keep_best: Annotated[
        bool, typer.Option("--keep-best", help="Also keep each SAE's checkpoint of lowest validation FVU (<sae>/best).")
    ] = False,
    wandb: Annotated[bool, typer.Option("--wandb", help="Also log to Weights & Biases.")] = False,
    parallel: Annotated[
        str | None,
        typer.Option(help="Under torchrun: 'data' splits every batch over the ranks, 'sae' splits the sweep's SAEs."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train SAEs on a cache: one from flags, or a grid from --sweep. All SAEs of a data group
    train together on each batch, read once. Launch with `torchrun --nproc-per-node N -m sae_core
    train ...` to spread it over N processes/GPUs (see docs/scaling.md)."""
    from sae_core import dist as sae_dist
    from sae_core.train import expand, load_sweep, run_training
    from sae_core.train.rundir import load_config
    from sae_core.validate import check_device, check_output_dir

    check_output_dir(out)
    if device is not None:
        check_device(device)
    if resume and overwrite:
        raise SAEError("--resume continues the run in --out and --overwrite deletes it; pass only one of them")
    if resume:
        config, _ = load_config(out, data)  # --out is the run: its config, its cache re-resolved
        if steps is not None:
            config.train.steps = steps
        if parallel is not None:
            config.train = dataclasses.replace(config.train, parallel=parallel)
        dist = sae_dist.init(config.train.device)
        try:
            run_training(config, progress=not quiet, resume=True, dist=dist, allow_incomplete=allow_incomplete)
        finally:
            sae_dist.shutdown()
        if dist.is_main:
            typer.echo(str(out))
        return
    if data is None:
        raise SAEError("--data is required: the cache directory printed by `sae cache`")
    tables: dict[str, dict[str, Any]] = load_sweep(sweep) if sweep else {"data": {}, "train": {}, "sae": {}}
    flags_data = {"layer": layer, "tokens": tokens, "batch_size": batch_size, "normalize": normalize,
                  "val_fraction": val_fraction}
    flags_sae = {"arch": arch, "k": k, "exp_factor": exp_factor, "d_sae": d_sae, "lr": lr, "l1_coeff": l1_coeff,
                 "l0_coeff": l0_coeff, "target_l0": target_l0}
    flags_train = {"steps": steps, "seed": seed, "device": device, "log_every": log_every,
                   "eval_every": eval_every, "keep_best": keep_best or None,
                   "checkpoint_every": checkpoint_every, "wandb": wandb or None, "parallel": parallel}
    flags_sae.update(parse_hypers(hyper))
    for table, flags in (("data", flags_data), ("sae", flags_sae), ("train", flags_train)):
        tables[table].update({key: v for key, v in flags.items() if v is not None})
    from sae_core.stores import open_reader

    reader = open_reader(data)
    config = expand(str(data), reader.meta.d_model, tables["data"], tables["sae"], tables["train"], str(out))
    dist = sae_dist.init(config.train.device)
    try:
        path = run_training(config, progress=not quiet, dist=dist, overwrite=overwrite, allow_incomplete=allow_incomplete)
    finally:
        sae_dist.shutdown()
    if dist.is_main:
        typer.echo(str(path))


def parse_hypers(pairs: list[str] | None) -> dict[str, Any]:
    """``--hyper`` pairs with TOML values (``prefixes=[64, 256]``, ``base="topk"``); a value
    that is not TOML stays a string (``base=topk``) and is typed by the architecture's Hyper."""
    import tomllib

    from sae_core.commands.cache_cmd import parse_kv

    out: dict[str, Any] = {}
    for key, raw in parse_kv(pairs, "--hyper").items():
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
    return out


def register(app: typer.Typer) -> None:
    app.command("train", cls=RegistryHelpCommand)(train)
