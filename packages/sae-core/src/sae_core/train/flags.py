"""``sae train``'s flags: one typed table, and their merge with a sweep TOML.

:class:`TrainFlags` is the table: each field is one flag, its type, default and help, and the
config key it sets (``section``: a key of the sweep's [data], [sae] or [train] table of the same
name; ``live``: a flag of live training only). ``sae_core.commands.train_cmd`` builds the
command's signature from it, so a new flag is one field here. The methods turn the parsed flags
into what the trainer takes: the tables :func:`~sae_core.train.config.expand` reads (a sweep TOML
with the flags on top), a run's config with ``--resume``'s overrides, or a live run's
:class:`~sae_core.train.live.options.LiveConfig`.

Light on purpose: the CLI imports this module to assemble ``sae --help`` (no torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from sae_core.errors import SAEError
from sae_core.train.config import DataConfig, load_sweep
from sae_core.train.live.options import DEFAULT_BUFFER_TOKENS, LiveConfig
from sae_core.train.rundir import load_config
from sae_core.validate import check_device, check_output_dir, check_positive

Tables = dict[str, dict[str, Any]]  # {"data": {...}, "sae": {...}, "train": {...}}: a sweep's tables


def _flag(default: Any, help: str, *decls: str, section: str | None = None, live: bool = False) -> Any:
    """One flag: ``decls`` are its spellings when not just ``--name``; ``section`` the sweep table
    whose key of the same name it sets; ``live``: only live training takes it."""
    return dataclasses.field(default=default, metadata={"help": help, "decls": decls, "section": section,
                                                        "live": live})


@dataclass(frozen=True)
class TrainFlags:
    """Every ``sae train`` flag, as parsed (the order of ``sae train --help``)."""

    out: Path = _flag(MISSING, "Run directory (one subdirectory per SAE).")
    data: str | None = _flag(
        None, "Cache directory printed by `sae cache`; with --adapter, a dataset spec (pydocs, text:FILE, ...).")
    sweep: Path | None = _flag(None, "TOML sweep: lists are swept as a grid.")
    resume: bool = _flag(False, "Continue the run in --out from its last state.", "--resume")
    overwrite: bool = _flag(False, "Delete the run already in --out (state, checkpoints) and start anew.", "--overwrite")
    allow_incomplete: bool = _flag(False, "Train on a cache whose `sae cache` was interrupted.", "--allow-incomplete")
    layer: str | None = _flag(
        None, "Layer index (negative allowed) or name in the cache (a transcoder's input).", "--layer", "--layer-in",
        section="data")
    layer_out: str | None = _flag(
        None, "Train transcoders: the cache layer (index or name) they predict from --layer, e.g. "
        "--layer blocks.3.ln2.hook_normalized --layer-out blocks.3.hook_mlp_out.", section="data")
    tokens: str | None = _flag(None, "Token filter: all, cls, patch, register, token.", section="data")
    arch: str | None = _flag(None, "Architecture (default topk), one of the installed: {architecture}.", section="sae")
    k: int | None = _flag(None, "Active latents per token (topk family).", section="sae")
    exp_factor: float | None = _flag(None, "d_sae = exp_factor * d_in.", section="sae")
    d_sae: int | None = _flag(None, "Dictionary size (overrides --exp-factor).", section="sae")
    lr: float | None = _flag(None, "Adam learning rate.", section="sae")
    l1_coeff: float | None = _flag(None, "L1 coefficient (relu, gated).", section="sae")
    l0_coeff: float | None = _flag(None, "L0 coefficient (jumprelu).", section="sae")
    target_l0: float | None = _flag(None, "Target L0 (jumprelu target mode).", section="sae")
    hyper: list[str] | None = _flag(
        None, "Any architecture hyperparameter KEY=VALUE (repeatable), e.g. aux_k=64, bandwidth=0.3.")
    steps: int | None = _flag(None, "Training steps.", section="train")
    batch_size: int | None = _flag(None, "Tokens per batch.", section="data")
    seed: int | None = _flag(None, "Seed (init and data order).", section="train")
    device: str | None = _flag(None, "cpu, cuda, cuda:1, ...", section="train")
    log_every: int | None = _flag(None, "Steps between metric lines.", section="train")
    checkpoint_every: int | None = _flag(None, "Steps between resumable states.", section="train")
    normalize: bool | None = _flag(None, "Scale inputs to E||x||=sqrt(d).", "--normalize/--no-normalize",
                                   section="data")
    val_fraction: float | None = _flag(
        None, "Fraction of whole examples held out for validation (default 0.02; 0: none).", section="data")
    eval_every: int | None = _flag(None, "Steps between validation metrics (default: --log-every).", section="train")
    keep_best: bool = _flag(False, "Also keep each SAE's checkpoint of lowest validation FVU (<sae>/best).",
                            "--keep-best", section="train")
    dead_tokens: int | None = _flag(
        None, "Training tokens a latent must stay silent to count as dead (AuxK, dead_frac); "
        "default: a tenth of the run's tokens, at most 1,000,000.", section="train")
    wandb: bool = _flag(False, "Also log to Weights & Biases: one W&B run per SAE, grouped by the sweep.", "--wandb")
    wandb_project: str | None = _flag(None, "W&B project (default $WANDB_PROJECT, else sae; implies --wandb).")
    wandb_entity: str | None = _flag(None, "W&B entity, team or user (default $WANDB_ENTITY; implies --wandb).")
    wandb_group: str | None = _flag(None, "W&B group of the sweep's runs (default: the --out directory's name).")
    wandb_tags: list[str] | None = _flag(None, "W&B tags, comma-separated or repeated (implies --wandb).")
    wandb_notes: str | None = _flag(None, "W&B notes of every run (implies --wandb).")
    wandb_mode: str | None = _flag(
        None, "W&B mode: online, offline or disabled (default: wandb's, e.g. WANDB_MODE).")
    wandb_artifact: bool = _flag(False, "Log each final checkpoint as a W&B model artifact (implies --wandb).",
                                 "--wandb-artifact", "--wandb-log-final-artifact")
    parallel: str | None = _flag(
        None, "Under torchrun: 'data' splits every batch over the ranks, 'sae' splits the sweep's SAEs.",
        section="train")
    max_tokens: int | None = _flag(None, "Train on this many tokens (sets --steps to max_tokens / batch size).")
    mixing: str | None = _flag(
        None, "Epoch order: shuffle (the store's, default for caches) or buffer (live training's; "
        "reproduces a live run on the cache its --also-cache wrote).", section="data")
    buffer_tokens: int | None = _flag(
        None, "Mixing buffer of --mixing buffer and live training, in token positions "
        "(windows of buffer_tokens / tokens-per-example examples; default 131072).")
    adapter: str | None = _flag(None, "Live training: the model adapter, one of the installed: {adapter}.")
    e2e: str | None = _flag(
        None, "Live training: add the spliced model's output to the loss: kl (next-token KL, causal "
        "LMs) or mse (final hidden states).", section="train", live=True)
    e2e_coeff: float | None = _flag(None, "Weight of the --e2e term (default 1).", section="train", live=True)
    e2e_rows: int | None = _flag(None, "Token windows per step for --e2e (default 4).", section="train", live=True)
    model: str | None = _flag(None, "Live training: the model (as for `sae cache`).", live=True)
    layers: str | None = _flag(None, "Live training: comma-separated layers/blocks.", live=True)
    hook: list[str] | None = _flag(None, "Live training: hook name (repeatable).", live=True)
    also_cache: Path | None = _flag(
        None, "Live training: also write the cache (the one `sae cache` would write) under this store root.",
        live=True)
    checkpoint: str | None = _flag(None, "Live training: local model weights file.", live=True)
    context_size: int | None = _flag(None, "Live training: tokens per window (text adapters).", live=True)
    opt: list[str] | None = _flag(None, "Live training: adapter option KEY=VALUE (repeatable).", live=True)
    split: str | None = _flag(None, "Live training: dataset split (hf datasets).", live=True)
    field: str | None = _flag(None, "Live training: record field holding the image/text.", live=True)
    data_opt: list[str] | None = _flag(None, "Live training: dataset option KEY=VALUE (repeatable).", live=True)
    max_examples: int | None = _flag(None, "Live training: use at most this many dataset examples.", live=True)
    dtype: str | None = _flag(None, "Live training: activations dtype fp32/fp16/bf16 (as cached).", live=True)
    model_batch_size: int | None = _flag(None, "Live training: examples per forward pass (default 64).", live=True)
    num_workers: int | None = _flag(None, "Live training: data-loading worker processes.", live=True)
    model_threads: int | None = _flag(
        None, "Live training: torch threads of the model's forwards, which run beside training (default: "
        "torch's, shared with it); on CPU e.g. 1, so that the two do not oversubscribe the cores.", live=True)
    quiet: bool = _flag(False, "No progress bar.", "--quiet", "-q")

    # -- checks -------------------------------------------------------------------------------
    def check(self) -> None:
        """The checks that need no file but --out: each a one-line error naming the flag to drop
        or add, before anything is read or loaded."""

        check_output_dir(self.out)
        if self.device is not None:
            check_device(self.device)
        if self.resume and self.overwrite:
            raise SAEError("--resume continues the run in --out and --overwrite deletes it; pass only one of them")
        live = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(self)
                if f.metadata["live"] and getattr(self, f.name)]
        if self.resume:
            given = (["--adapter"] if self.adapter else []) + live
            if given:
                raise SAEError(f"--resume continues the run in --out as it was started; drop {given[0]}")
            return
        if self.adapter is None:
            if live:
                raise SAEError(f"{live[0]} is for live training; add --adapter NAME (and --model, --layers) or drop it")
        elif self.model is None:
            raise SAEError("live training (--adapter) needs --model, e.g. --adapter hf --model minilm --layers 3")
        if self.data is None:
            raise SAEError("--data is required: the cache directory printed by `sae cache`"
                           + (", or with --adapter a dataset spec (pydocs, text:FILE, ...)" if self.adapter is None
                              else ""))

    # -- a new run: the sweep's tables with the flags on top -------------------------------------
    def sweep_tables(self) -> Tables:
        """The sweep TOML's tables (empty without --sweep), each key a flag sets replaced by it;
        ``--max-tokens`` turned into [train] steps."""

        tables: Tables = load_sweep(self.sweep) if self.sweep else {"data": {}, "train": {}, "sae": {}}
        if self.layer is not None:
            tables["data"].pop("layer_in", None)  # the flag overrides the file, whichever spelling it used
        for section in ("data", "sae", "train"):
            tables[section].update(self._section(section))
        self._max_tokens(tables)
        return tables

    def _section(self, section: str) -> dict[str, Any]:
        """The keys of one sweep table that the given flags set (a flag left at its default sets
        nothing: None, or False for a switch)."""
        keys = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["section"] == section and getattr(self, f.name) != f.default}
        if section == "sae":
            keys.update(parse_hypers(self.hyper))
        if section == "train":
            keys.update({k: v for k, v in self.wandb_keys().items() if v is not None})
        return keys

    def wandb_keys(self) -> dict[str, Any]:
        """[train] keys of the --wandb* flags; any of them turns W&B logging on."""
        keys: dict[str, Any] = {"wandb_project": self.wandb_project, "wandb_entity": self.wandb_entity,
                                "wandb_group": self.wandb_group, "wandb_notes": self.wandb_notes,
                                "wandb_mode": self.wandb_mode, "wandb_artifact": self.wandb_artifact or None}
        if self.wandb_tags:
            keys["wandb_tags"] = [t.strip() for part in self.wandb_tags for t in part.split(",") if t.strip()]
        if self.wandb or any(v is not None for v in keys.values()):
            keys["wandb"] = True
        return keys

    def _max_tokens(self, tables: Tables) -> None:
        """``--max-tokens N``: steps = ceil(N / batch size) (one batch size; overrides the sweep's steps)."""
        if self.max_tokens is None:
            return

        check_positive(self.max_tokens, "--max-tokens")
        if self.steps is not None:
            raise SAEError("--max-tokens sets the number of steps; pass --max-tokens or --steps, not both")
        bs = tables["data"].get("batch_size", DataConfig.batch_size)
        if isinstance(bs, list):
            if len(set(bs)) != 1:
                raise SAEError("--max-tokens needs one batch size; the sweep has several (use [train] steps)")
            bs = bs[0]
        tables["train"]["steps"] = max(1, -(-int(self.max_tokens) // int(bs)))

    def set_buffer(self, tables: Tables, tokens_per_example: int, *, live: bool) -> None:
        """The mixing window in examples, from --buffer-tokens (or its default) and the rows' length."""

        data = tables["data"]
        check_positive(self.buffer_tokens, "--buffer-tokens")
        if live:
            mixing = data.setdefault("mixing", "buffer")
            if mixing != "buffer":
                raise SAEError(f"live training mixes samples in a buffer; mixing = {mixing!r} needs a cache "
                               "(drop it, or set mixing = \"buffer\")")
        elif data.get("mixing", "shuffle") != "buffer":
            if self.buffer_tokens is not None:
                raise SAEError("--buffer-tokens sets the buffer of --mixing buffer (or of live training); add "
                               "--mixing buffer")
            return
        if self.buffer_tokens is not None or "buffer_examples" not in data:
            data["buffer_examples"] = max(1, -(-(self.buffer_tokens or DEFAULT_BUFFER_TOKENS) // tokens_per_example))

    # -- --resume: the run's own config, with the few flags it takes -----------------------------
    def resumed_config(self) -> Any:
        """The config of the run in --out (its cache re-resolved, --data if given), with --steps,
        --parallel and the --wandb* flags applied (the W&B run ids in state/wandb.json are kept)."""

        config, _ = load_config(self.out, self.data)
        if self.steps is not None:
            config.train.steps = self.steps
        if self.parallel is not None:
            config.train = dataclasses.replace(config.train, parallel=self.parallel)
        keys = self.wandb_keys()
        if keys:  # e.g. --resume --wandb-mode offline
            config.train = dataclasses.replace(config.train, **{k: v for k, v in keys.items() if v is not None})
        return config

    # -- live training -------------------------------------------------------------------------
    def live_config(self) -> Any:
        """The :class:`~sae_core.train.live.options.LiveConfig` of ``--adapter --model --layers
        --data DATASET`` and the other live flags, checked."""
        from sae_core.caching import normalize_dtype  # lazy: loads torch, numpy
        from sae_core.commands.cache_cmd import parse_kv  # lazy: loads typer, annotated_doc

        data = str(self.data)
        if Path(data).is_dir() and (Path(data) / "metadata.json").is_file():
            raise SAEError(f"--data {data} is a cache, but --adapter trains live on a dataset; drop --adapter (and "
                           "--model, --layers) to train on the cache, or pass a dataset spec (pydocs, text:FILE, ...)")
        layer_list = [x.strip() for x in self.layers.split(",") if x.strip()] if self.layers else []
        layer_list += list(self.hook or [])
        if not layer_list:
            raise SAEError("live training needs --layers 3 (block indices) or --hook NAME")
        check_positive(self.max_examples, "--max-examples")
        check_positive(self.context_size, "--context-size")
        check_positive(self.model_batch_size, "--model-batch-size")
        check_positive(self.num_workers, "--num-workers", minimum=0)
        check_positive(self.model_threads, "--model-threads")
        data_options: dict[str, Any] = {"split": self.split, "field": self.field, **parse_kv(self.data_opt, "--data-opt")}
        if self.max_examples is not None:
            data_options["limit"] = self.max_examples
        live = LiveConfig(
            adapter=str(self.adapter), model=str(self.model), layers=layer_list, data=data,
            data_options={k: v for k, v in data_options.items() if v is not None}, checkpoint=self.checkpoint,
            context_size=self.context_size, options=parse_kv(self.opt, "--opt"), dtype=self.dtype or "float32",
            model_batch_size=self.model_batch_size or 64, num_workers=self.num_workers or 0,
            also_cache=str(self.also_cache) if self.also_cache is not None else None,
            model_threads=self.model_threads,
        )
        normalize_dtype(live.dtype)
        return live


def parse_hypers(pairs: list[str] | None) -> dict[str, Any]:
    """``--hyper`` pairs with TOML values (``prefixes=[64, 256]``, ``base="topk"``); a value
    that is not TOML stays a string (``base=topk``) and is typed by the architecture's Hyper."""
    import tomllib

    from sae_core.commands.cache_cmd import parse_kv  # lazy: loads typer, annotated_doc

    out: dict[str, Any] = {}
    for key, raw in parse_kv(pairs, "--hyper").items():
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
    return out
