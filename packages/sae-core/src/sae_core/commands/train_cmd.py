"""``sae train``: train one SAE or a whole sweep on a cache, or live on a running model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from sae_core.commands.dynamic_help import RegistryHelpCommand
from sae_core.errors import SAEError


def train(
    out: Annotated[Path, typer.Option(help="Run directory (one subdirectory per SAE).")],
    data: Annotated[
        str | None,
        typer.Option(help="Cache directory printed by `sae cache`; with --adapter, a dataset spec (pydocs, text:FILE, ...)."),
    ] = None,
    sweep: Annotated[Path | None, typer.Option(help="TOML sweep: lists are swept as a grid.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last state.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete the run already in --out (state, checkpoints) and start anew.")
    ] = False,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Train on a cache whose `sae cache` was interrupted.")
    ] = False,
    layer: Annotated[
        str | None,
        typer.Option("--layer", "--layer-in", help="Layer index (negative allowed) or name in the cache (a transcoder's input)."),
    ] = None,
    layer_out: Annotated[
        str | None,
        typer.Option(help="Train transcoders: the cache layer (index or name) they predict from --layer, e.g. "
                          "--layer blocks.3.ln2.hook_normalized --layer-out blocks.3.hook_mlp_out."),
    ] = None,
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
    dead_tokens: Annotated[
        int | None,
        typer.Option(help="Training tokens a latent must stay silent to count as dead (AuxK, dead_frac); "
                          "default: a tenth of the run's tokens, at most 1,000,000."),
    ] = None,
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Also log to Weights & Biases: one W&B run per SAE, grouped by the sweep.")
    ] = False,
    wandb_project: Annotated[str | None, typer.Option(help="W&B project (default $WANDB_PROJECT, else sae; implies --wandb).")] = None,
    wandb_entity: Annotated[str | None, typer.Option(help="W&B entity, team or user (default $WANDB_ENTITY; implies --wandb).")] = None,
    wandb_group: Annotated[
        str | None, typer.Option(help="W&B group of the sweep's runs (default: the --out directory's name).")
    ] = None,
    wandb_tags: Annotated[
        list[str] | None, typer.Option(help="W&B tags, comma-separated or repeated (implies --wandb).")
    ] = None,
    wandb_notes: Annotated[str | None, typer.Option(help="W&B notes of every run (implies --wandb).")] = None,
    wandb_mode: Annotated[
        str | None, typer.Option(help="W&B mode: online, offline or disabled (default: wandb's, e.g. WANDB_MODE).")
    ] = None,
    wandb_artifact: Annotated[
        bool, typer.Option("--wandb-artifact", "--wandb-log-final-artifact", help="Log each final checkpoint as a W&B model artifact (implies --wandb).")
    ] = False,
    parallel: Annotated[
        str | None,
        typer.Option(help="Under torchrun: 'data' splits every batch over the ranks, 'sae' splits the sweep's SAEs."),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Train on this many tokens (sets --steps to max_tokens / batch size).")
    ] = None,
    mixing: Annotated[
        str | None,
        typer.Option(help="Epoch order: shuffle (the store's, default for caches) or buffer (live training's; "
                          "reproduces a live run on the cache its --also-cache wrote)."),
    ] = None,
    buffer_tokens: Annotated[
        int | None,
        typer.Option(help="Mixing buffer of --mixing buffer and live training, in token positions "
                          "(windows of buffer_tokens / tokens-per-example examples; default 131072)."),
    ] = None,
    adapter: Annotated[
        str | None, typer.Option(help="Live training: the model adapter, one of the installed: {adapter}.")
    ] = None,
    e2e: Annotated[
        str | None,
        typer.Option(help="Live training: add the spliced model's output to the loss: kl (next-token KL, causal "
                          "LMs) or mse (final hidden states)."),
    ] = None,
    e2e_coeff: Annotated[float | None, typer.Option(help="Weight of the --e2e term (default 1).")] = None,
    e2e_rows: Annotated[int | None, typer.Option(help="Token windows per step for --e2e (default 4).")] = None,
    model: Annotated[str | None, typer.Option(help="Live training: the model (as for `sae cache`).")] = None,
    layers: Annotated[str | None, typer.Option(help="Live training: comma-separated layers/blocks.")] = None,
    hook: Annotated[list[str] | None, typer.Option(help="Live training: hook name (repeatable).")] = None,
    also_cache: Annotated[
        Path | None,
        typer.Option(help="Live training: also write the cache (the one `sae cache` would write) under this store root."),
    ] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Live training: local model weights file.")] = None,
    context_size: Annotated[int | None, typer.Option(help="Live training: tokens per window (text adapters).")] = None,
    opt: Annotated[list[str] | None, typer.Option(help="Live training: adapter option KEY=VALUE (repeatable).")] = None,
    split: Annotated[str | None, typer.Option(help="Live training: dataset split (hf datasets).")] = None,
    field: Annotated[str | None, typer.Option(help="Live training: record field holding the image/text.")] = None,
    data_opt: Annotated[list[str] | None, typer.Option(help="Live training: dataset option KEY=VALUE (repeatable).")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Live training: use at most this many dataset examples.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Live training: activations dtype fp32/fp16/bf16 (as cached).")] = None,
    model_batch_size: Annotated[int | None, typer.Option(help="Live training: examples per forward pass (default 64).")] = None,
    num_workers: Annotated[int | None, typer.Option(help="Live training: data-loading worker processes.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train SAEs on a cache: one from flags, or a grid from --sweep. All SAEs of a data group
    train together on each batch, read once. With --layer-out they are transcoders: they encode
    --layer and reconstruct --layer-out of the same cache. With --adapter/--model/--layers and a
    dataset as --data, train live on the running model instead, without a cache (--also-cache
    writes one as it goes). Launch with `torchrun --nproc-per-node N -m sae_core train ...` to
    spread it over N processes/GPUs (see docs/scaling.md)."""
    from sae_core import dist as sae_dist
    from sae_core.train import expand, load_sweep, run_training
    from sae_core.train.rundir import load_config
    from sae_core.validate import check_device, check_output_dir

    check_output_dir(out)
    if device is not None:
        check_device(device)
    if resume and overwrite:
        raise SAEError("--resume continues the run in --out and --overwrite deletes it; pass only one of them")
    live_flags = {"--e2e": e2e, "--e2e-coeff": e2e_coeff, "--e2e-rows": e2e_rows, "--model": model, "--layers": layers, "--hook": hook, "--also-cache": also_cache,
                  "--checkpoint": checkpoint, "--context-size": context_size, "--opt": opt, "--split": split,
                  "--field": field, "--data-opt": data_opt, "--max-examples": max_examples, "--dtype": dtype,
                  "--model-batch-size": model_batch_size, "--num-workers": num_workers}
    if resume:
        given = [k for k, v in {"--adapter": adapter, **live_flags}.items() if v]
        if given:
            raise SAEError(f"--resume continues the run in --out as it was started; drop {given[0]}")
        config, _ = load_config(out, data)  # --out is the run: its config, its cache re-resolved
        if steps is not None:
            config.train.steps = steps
        if parallel is not None:
            config.train = dataclasses.replace(config.train, parallel=parallel)
        wandb_flags = _wandb_flags(wandb, project=wandb_project, entity=wandb_entity, group=wandb_group,
                                   tags=wandb_tags, notes=wandb_notes, mode=wandb_mode, artifact=wandb_artifact)
        if wandb_flags:  # e.g. --resume --wandb-mode offline; the run ids in state/wandb.json are kept
            config.train = dataclasses.replace(config.train, **{k: v for k, v in wandb_flags.items() if v is not None})
        dist = sae_dist.init(config.train.device)
        try:
            run_training(config, progress=not quiet, resume=True, dist=dist, allow_incomplete=allow_incomplete)
        finally:
            sae_dist.shutdown()
        if dist.is_main:
            typer.echo(str(out))
        return
    if adapter is None:
        given = [k for k, v in live_flags.items() if v]
        if given:
            raise SAEError(f"{given[0]} is for live training; add --adapter NAME (and --model, --layers) or drop it")
    elif model is None:
        raise SAEError("live training (--adapter) needs --model, e.g. --adapter hf --model minilm --layers 3")
    if data is None:
        raise SAEError("--data is required: the cache directory printed by `sae cache`"
                       + (", or with --adapter a dataset spec (pydocs, text:FILE, ...)" if adapter is None else ""))
    tables: dict[str, dict[str, Any]] = load_sweep(sweep) if sweep else {"data": {}, "train": {}, "sae": {}}
    flags_data = {"layer": layer, "layer_out": layer_out, "tokens": tokens, "batch_size": batch_size, "normalize": normalize,
                  "val_fraction": val_fraction, "mixing": mixing}
    flags_sae = {"arch": arch, "k": k, "exp_factor": exp_factor, "d_sae": d_sae, "lr": lr, "l1_coeff": l1_coeff,
                 "l0_coeff": l0_coeff, "target_l0": target_l0}
    flags_train = {"steps": steps, "seed": seed, "device": device, "log_every": log_every,
                   "eval_every": eval_every, "keep_best": keep_best or None,
                   "checkpoint_every": checkpoint_every, "parallel": parallel,
                   "e2e": e2e, "e2e_coeff": e2e_coeff, "e2e_rows": e2e_rows}
    flags_train["dead_tokens"] = dead_tokens
    flags_train.update(_wandb_flags(wandb, project=wandb_project, entity=wandb_entity, group=wandb_group,
                                    tags=wandb_tags, notes=wandb_notes, mode=wandb_mode, artifact=wandb_artifact))
    flags_sae.update(parse_hypers(hyper))
    if layer is not None:
        tables["data"].pop("layer_in", None)  # the flag overrides the file, whichever spelling it used
    for table, flags in (("data", flags_data), ("sae", flags_sae), ("train", flags_train)):
        tables[table].update({key: v for key, v in flags.items() if v is not None})
    _max_tokens(tables, max_tokens, steps)
    if adapter is not None:
        _train_live(out, data, adapter, model, tables, layers=layers, hook=hook, also_cache=also_cache,
                    checkpoint=checkpoint, context_size=context_size, opt=opt, split=split, field=field,
                    data_opt=data_opt, max_examples=max_examples, dtype=dtype, model_batch_size=model_batch_size,
                    num_workers=num_workers, buffer_tokens=buffer_tokens, overwrite=overwrite, quiet=quiet)
        return
    from sae_core.stores import open_reader

    reader = open_reader(Path(data))
    _buffer(tables, buffer_tokens, reader.meta.tokens_per_example, live=False)
    config = expand(str(data), reader.meta.d_model, tables["data"], tables["sae"], tables["train"], str(out))
    dist = sae_dist.init(config.train.device)
    try:
        path = run_training(config, progress=not quiet, dist=dist, overwrite=overwrite, allow_incomplete=allow_incomplete)
    finally:
        sae_dist.shutdown()
    if dist.is_main:
        typer.echo(str(path))


def _wandb_flags(on: bool, *, project: str | None, entity: str | None, group: str | None, tags: list[str] | None,
                 notes: str | None, mode: str | None, artifact: bool) -> dict[str, Any]:
    """[train] keys of the --wandb* flags; any of them turns W&B logging on."""
    flags: dict[str, Any] = {"wandb_project": project, "wandb_entity": entity, "wandb_group": group,
                             "wandb_notes": notes, "wandb_mode": mode, "wandb_artifact": artifact or None}
    if tags:
        flags["wandb_tags"] = [t.strip() for part in tags for t in part.split(",") if t.strip()]
    if on or any(v is not None for v in flags.values()):
        flags["wandb"] = True
    return flags


def _max_tokens(tables: dict[str, dict[str, Any]], max_tokens: int | None, steps: int | None) -> None:
    """``--max-tokens N``: steps = ceil(N / batch size) (one batch size; overrides the sweep's steps)."""
    if max_tokens is None:
        return
    from sae_core.train.config import DataConfig
    from sae_core.validate import check_positive

    check_positive(max_tokens, "--max-tokens")
    if steps is not None:
        raise SAEError("--max-tokens sets the number of steps; pass --max-tokens or --steps, not both")
    bs = tables["data"].get("batch_size", DataConfig.batch_size)
    if isinstance(bs, list):
        if len(set(bs)) != 1:
            raise SAEError("--max-tokens needs one batch size; the sweep has several (use [train] steps)")
        bs = bs[0]
    tables["train"]["steps"] = max(1, -(-int(max_tokens) // int(bs)))


def _buffer(tables: dict[str, dict[str, Any]], buffer_tokens: int | None, tokens_per_example: int, *,
            live: bool) -> None:
    """The mixing window in examples, from --buffer-tokens (or its default) and the rows' length."""
    from sae_core.train.live.options import DEFAULT_BUFFER_TOKENS
    from sae_core.validate import check_positive

    data = tables["data"]
    check_positive(buffer_tokens, "--buffer-tokens")
    if live:
        mixing = data.setdefault("mixing", "buffer")
        if mixing != "buffer":
            raise SAEError(f"live training mixes samples in a buffer; mixing = {mixing!r} needs a cache "
                           "(drop it, or set mixing = \"buffer\")")
    elif data.get("mixing", "shuffle") != "buffer":
        if buffer_tokens is not None:
            raise SAEError("--buffer-tokens sets the buffer of --mixing buffer (or of live training); add --mixing buffer")
        return
    if buffer_tokens is not None or "buffer_examples" not in data:
        data["buffer_examples"] = max(1, -(-(buffer_tokens or DEFAULT_BUFFER_TOKENS) // tokens_per_example))


def _train_live(out: Path, data: str, adapter: str, model: str, tables: dict[str, dict[str, Any]], *,
                layers: str | None, hook: list[str] | None, also_cache: Path | None, checkpoint: str | None,
                context_size: int | None, opt: list[str] | None, split: str | None, field: str | None,
                data_opt: list[str] | None, max_examples: int | None, dtype: str | None,
                model_batch_size: int | None, num_workers: int | None, buffer_tokens: int | None,
                overwrite: bool, quiet: bool) -> None:
    """``sae train --adapter A --model M --layers L --data DATASET``: train on the running model."""
    import sys

    from sae_core import dist as sae_dist
    from sae_core.commands.cache_cmd import parse_kv
    from sae_core.train import expand, run_training
    from sae_core.train.live.options import LiveConfig
    from sae_core.train.live.source import LiveSource
    from sae_core.validate import check_device, check_positive

    if Path(data).is_dir() and (Path(data) / "metadata.json").is_file():
        raise SAEError(f"--data {data} is a cache, but --adapter trains live on a dataset; drop --adapter (and "
                       "--model, --layers) to train on the cache, or pass a dataset spec (pydocs, text:FILE, ...)")
    layer_list = [x.strip() for x in layers.split(",") if x.strip()] if layers else []
    layer_list += list(hook or [])
    if not layer_list:
        raise SAEError("live training needs --layers 3 (block indices) or --hook NAME")
    check_positive(max_examples, "--max-examples")
    check_positive(context_size, "--context-size")
    check_positive(model_batch_size, "--model-batch-size")
    check_positive(num_workers, "--num-workers", minimum=0)
    data_options: dict[str, Any] = {"split": split, "field": field, **parse_kv(data_opt, "--data-opt")}
    if max_examples is not None:
        data_options["limit"] = max_examples
    live = LiveConfig(
        adapter=adapter, model=model, layers=layer_list, data=data,
        data_options={k: v for k, v in data_options.items() if v is not None}, checkpoint=checkpoint,
        context_size=context_size, options=parse_kv(opt, "--opt"), dtype=dtype or "float32",
        model_batch_size=model_batch_size or 64, num_workers=num_workers or 0,
        also_cache=str(also_cache) if also_cache is not None else None,
    )
    from sae_core.caching import normalize_dtype

    normalize_dtype(live.dtype)
    device = str(tables["train"].get("device", "cpu"))
    check_device(device)
    dist = sae_dist.init(device)
    try:
        source = LiveSource(live, device=device, dist=dist, progress=not quiet)
        try:
            _buffer(tables, buffer_tokens, source.meta.tokens_per_example, live=True)
            config = expand(str(source.cache_path or ""), source.meta.d_model, tables["data"], tables["sae"],
                            tables["train"], str(out), live=live)
        except BaseException:
            source.close()
            raise
        path = run_training(config, progress=not quiet, dist=dist, overwrite=overwrite, source=source)
        rate = source.throughput()
        if dist.is_main and not quiet and rate is not None:
            print(f"live: the model computed {source.model_rows} rows, {source.model_tokens} tokens, at "
                  f"{rate:,.0f} tokens/s while training" + (f"; cache {source.cache_path}" if source.cache_path
                                                              is not None else ""), file=sys.stderr)
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
