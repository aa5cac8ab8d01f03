"""Training configuration: CLI flags or a TOML sweep expanded into one config per SAE.

A sweep file has three tables; scalars are fixed, lists are swept as a grid (the cartesian product
over every list in [data] and [sae]):

    [data]            # what changes the data stream: each combination is its own group
    layer = [0, 1]    # layer index or name in the cache (layer_in is a synonym)
    layer_out = 1     # set: transcoders from `layer` to this layer of the same cache
    tokens = "all"    # all | cls | patch | register | token
    batch_size = 4096
    normalize = true  # scale inputs to E||x|| = sqrt(d_in), folded back at save
    val_fraction = 0.02 # whole examples held out for validation metrics (0: none)
    mixing = "shuffle" # or "buffer": windows of buffer_examples examples (a live run's order)

    [train]           # shared by every SAE
    steps = 10000
    seed = 0
    wandb = true      # one W&B run per SAE (also wandb_project, wandb_entity, wandb_group,
                      # wandb_tags = ["a", "b"], wandb_notes, wandb_mode, wandb_artifact)
    parallel = "data" # under torchrun: split each batch ("data") or the sweep ("sae") over ranks

    [sae]             # per SAE; lists here do NOT split groups
    arch = "topk"
    k = [16, 32]
    exp_factor = [8, 16]
    lr = [1e-4, 3e-4]
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sae_core.dataclass_parsing import from_dict
from sae_core.errors import ConfigError
from sae_core.protocols.batch_plan import Mixing
from sae_core.train.live.options import LiveConfig


@dataclass(frozen=True)
class DataConfig:
    layer: str = "0"
    tokens: str = "all"
    #: transcoders: the cache layer they reconstruct, from ``layer`` (None: SAEs of ``layer``)
    layer_out: str | None = None
    batch_size: int = 4096
    normalize: bool = True
    val_fraction: float = 0.02  # whole examples held out for validation (sae_core.validation_split)
    val_seed: int = 0  # which examples: fixed by default, so every run of a cache shares its split
    #: order of an epoch: "shuffle" (the store's own) or "buffer" (consecutive windows of
    #: buffer_examples dataset examples, each shuffled: what live training does, reproducible
    #: from the cache it wrote; sae_core.protocols.batch_plan.Mixing)
    mixing: str = "shuffle"
    buffer_examples: int = 0  # buffer mixing: examples per window

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.layer_out is not None and str(self.layer_out) == str(self.layer):
            raise ConfigError(f"layer_out {self.layer_out!r} is the input layer itself: that is an SAE; drop "
                              "--layer-out, or name the layer the transcoder should predict")
        self.split()  # validates val_fraction
        self.mixing_plan()  # validates mixing and buffer_examples

    def mixing_plan(self):
        """The :class:`~sae_core.protocols.batch_plan.Mixing` of this stream."""

        if self.mixing == "buffer" and self.buffer_examples < 1:
            raise ConfigError(f"mixing = \"buffer\" needs buffer_examples >= 1 (or --buffer-tokens), got "
                              f"{self.buffer_examples}")
        return Mixing(self.mixing, self.buffer_examples if self.mixing == "buffer" else 0)

    @property
    def transcoder(self) -> bool:
        """SAEs of this stream are transcoders (``layer`` -> ``layer_out``)."""
        return self.layer_out is not None

    def identity(self) -> dict[str, Any]:
        """The fields that say what this stream is, for seeds and config.json: every field, with
        ``layer_out`` only when set (an SAE's identity, and so its seed, is as before)."""
        d = asdict(self)
        if d["layer_out"] is None:
            del d["layer_out"]
        return d

    def split(self):
        """The validation split of this stream (fraction 0: no split, training reads everything)."""
        from sae_core.validation_split import ExampleSplit  # lazy: loads numpy

        return ExampleSplit(self.val_fraction, self.val_seed)


@dataclass
class TrainSettings:
    steps: int = 1000
    seed: int = 0
    device: str = "cpu"
    log_every: int = 50
    checkpoint_every: int = 500
    lr_warmup_steps: int = 0  # default: 5% of steps
    lr_decay_frac: float = 0.2  # linear decay to 0 over the last fraction of steps
    sparsity_warmup_steps: int = 0  # default: 5% of steps
    #: a latent silent for this many training tokens counts as dead (AuxK's revival set, the
    #: logged ``dead_frac``); 0: :meth:`dead_window` picks it from the run's length
    dead_tokens: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    #: clip each SAE's gradient (all its parameters together) to this norm before Adam, as
    #: SAELens does with clip_grad_norm_(1.0); 0: off; None: the architecture's ``Bank.grad_clip``
    #: (1.0 for all built-in architectures but JumpReLU; see sae_core.train.step.clip_grad_norms)
    grad_clip: float | None = None
    norm_batches: int = 8  # batches used to estimate the normalisation scale / b_dec
    final_batches: int = 4  # batches after the last step: calibrate inference thresholds, final metrics
    eval_every: int = 0  # steps between validation metrics (0: every log step)
    val_tokens: int = 65_536  # at most this many validation tokens are evaluated
    keep_best: bool = False  # also keep each SAE's checkpoint of lowest validation FVU (<sae>/best/)
    #: Weights & Biases (train/wandb_log.py): one W&B run per SAE, grouped by the sweep
    wandb: bool = False
    wandb_project: str = ""  # "" : $WANDB_PROJECT, else "sae"
    wandb_entity: str = ""  # "" : $WANDB_ENTITY, else the W&B default entity
    wandb_group: str = ""  # "" : the run directory's name
    wandb_tags: list[str] = field(default_factory=list)
    wandb_notes: str = ""
    wandb_mode: str = ""  # online | offline | disabled; "" : wandb's default (WANDB_MODE)
    wandb_artifact: bool = False  # log each final checkpoint as a `model` artifact
    parallel: str = "data"  # under torchrun: "data" (split batches) or "sae" (split the sweep)
    #: end-to-end training (live only, sae_core.train.live.e2e): "" (off), "kl" (next-token KL of the
    #: spliced model, causal LMs) or "mse" (normalised MSE of the final hidden states)
    e2e: str = ""
    e2e_coeff: float = 1.0  # weight of the end-to-end term in each SAE's loss
    e2e_rows: int = 4  # token windows per step the spliced model runs on (per SAE)

    def dead_window(self, batch_size: int) -> int:
        """Training tokens a latent must stay silent to count as dead.

        ``dead_tokens`` when set; else a tenth of the run's training tokens, at least one batch
        and at most 1,000,000 (the fixed window used before; sparsify uses 10M tokens, SAELens
        1,000 steps). A fixed 1M window never fires in a short run — the quickstart trains on
        256k tokens — so dead latents went uncounted and AuxK, which revives them, never ran.
        """
        if self.dead_tokens:
            return self.dead_tokens
        return min(1_000_000, max(batch_size, self.steps * batch_size // 10))

    def __post_init__(self) -> None:
        if self.dead_tokens < 0:
            raise ConfigError(f"dead_tokens must be >= 0 (0: a tenth of the run's tokens), got {self.dead_tokens}")
        if self.wandb_mode not in ("", "online", "offline", "disabled"):
            raise ConfigError(f"wandb_mode must be online, offline or disabled, got {self.wandb_mode!r}")
        if self.parallel not in ("data", "sae"):
            raise ConfigError(f"parallel must be 'data' or 'sae', got {self.parallel!r}")
        if self.e2e not in ("", "kl", "mse"):
            raise ConfigError(f"e2e must be kl or mse (or empty: off), got {self.e2e!r}")
        if self.e2e_rows < 1 or self.e2e_coeff < 0:
            raise ConfigError("e2e_rows must be >= 1 and e2e_coeff >= 0")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.final_batches < 1:
            raise ConfigError(f"final_batches must be >= 1, got {self.final_batches}")
        if self.eval_every < 0 or self.val_tokens < 1:
            raise ConfigError("eval_every must be >= 0 (0: every log step) and val_tokens >= 1")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("log_every and checkpoint_every must be >= 1")
        if not 0 <= self.lr_decay_frac <= 1:
            raise ConfigError(f"lr_decay_frac must be in [0, 1], got {self.lr_decay_frac}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be >= 0 (0: no clipping), got {self.grad_clip}")


SAE_COMMON = ("arch", "exp_factor", "d_sae", "lr", "name")


@dataclass
class SAEConfig:
    """One SAE of a sweep: architecture, size, lr and the architecture's hyperparameters."""

    arch: str
    d_sae: int
    lr: float
    hyper: dict[str, Any]
    data: DataConfig
    name: str = ""


@dataclass
class TrainConfig:
    cache: str  # the cache directory ("" for a live run without --also-cache)
    saes: list[SAEConfig]
    train: TrainSettings = field(default_factory=TrainSettings)
    out: str = "runs/sae"
    #: live training: the model and dataset the activations come from (sae_core.train.live)
    live: LiveConfig | None = None

    def groups(self) -> dict[DataConfig, list[SAEConfig]]:
        """SAEs grouped by data stream: each group reads every batch once."""
        out: dict[DataConfig, list[SAEConfig]] = {}
        for sae in self.saes:
            out.setdefault(sae.data, []).append(sae)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "cache": self.cache,
            "out": self.out,
            "train": asdict(self.train),
            "saes": [{**asdict(s), "data": s.data.identity()} for s in self.saes],
            **({"live": asdict(self.live)} if self.live is not None else {}),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TrainConfig:
        # runs written before validation splits existed trained on every example: keep them so
        saes = [
            SAEConfig(**{**s, "data": from_dict(DataConfig, {"val_fraction": 0.0, **s["data"]}, strict=False)})
            for s in doc["saes"]
        ]
        live = from_dict(LiveConfig, doc["live"], strict=False) if doc.get("live") else None
        return cls(cache=doc["cache"] or "", saes=saes, train=from_dict(TrainSettings, doc["train"], strict=False),
                   out=doc["out"], live=live)


def _grid(table: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(table)
    values = [v if isinstance(v, list) and k != "prefixes" else [v] for k, v in table.items()]
    if "prefixes" in table and table["prefixes"] and isinstance(table["prefixes"][0], list):
        values[keys.index("prefixes")] = table["prefixes"]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def expand(
    cache: str, d_in: int, data: dict[str, Any], sae: dict[str, Any], train: dict[str, Any], out: str,
    *, live: LiveConfig | None = None,
) -> TrainConfig:
    """Expand [data] × [sae] grids into SAE configs, validating every key and value."""
    data = _data_table(data)
    settings = from_dict(TrainSettings, train, where="[train]")
    data_grid = _grid({k: (str(v) if k in _LAYER_KEYS and v is not None and not isinstance(v, list) else v)
                       for k, v in data.items()})
    sae_grid = _grid(sae)
    other_keys = _other_arch_keys(sae.get("arch", "topk"))
    swept = {k for k, v in {**data, **sae}.items() if isinstance(v, list) and len(v) > 1 and k != "prefixes"}
    saes: list[SAEConfig] = []
    for d in data_grid:
        dcfg = from_dict(DataConfig, {k: (str(v) if k in _LAYER_KEYS and v is not None else v) for k, v in d.items()},
                         where="[data]")
        saes += [_sae_config(dcfg, dict(s), d_in, other_keys, swept) for s in sae_grid]
    names = [s.name for s in saes]
    for i, s in enumerate(saes):
        if names.count(s.name) > 1:
            s.name = f"{s.name}-{i}"
    if not saes:
        raise ConfigError("the sweep is empty: a list in [data] or [sae] has no values")
    return TrainConfig(cache=cache, saes=saes, train=settings, out=out, live=live)


_LAYER_KEYS = ("layer", "layer_out")  # given as index or name: kept as strings


def _data_table(data: dict[str, Any]) -> dict[str, Any]:
    """[data] with ``layer_in`` spelled ``layer``; an unknown key is an error."""
    data = dict(data)
    if "layer_in" in data:  # the transcoder spelling of `layer`
        if "layer" in data:
            raise ConfigError("[data]: give the input layer as `layer` or `layer_in`, not both")
        data["layer"] = data.pop("layer_in")
    unknown_data = [k for k in data if k not in {f.name for f in fields(DataConfig)}]
    if unknown_data:
        raise ConfigError(f"[data]: unknown key {unknown_data[0]!r}; valid keys: {', '.join(f.name for f in fields(DataConfig))}"
                          ", layer_in")
    return data


def _other_arch_keys(arch_names: Any) -> set[str]:
    """Hyperparameters of every architecture a sweep over several names: a key of one of them is
    dropped from the others' SAEs rather than refused."""
    from sae_core.plugins import get_component  # lazy: loads pluggy

    arch_names = arch_names if isinstance(arch_names, list) else [arch_names]
    valid_any: set[str] = set()
    if len(arch_names) > 1:
        for a in arch_names:
            valid_any |= set(get_component("architecture", str(a)).factory.hyper_fields())
    return valid_any


def _sae_config(dcfg: DataConfig, s: dict[str, Any], d_in: int, other_keys: set[str], swept: set[str]) -> SAEConfig:
    """One SAE of the grid: ``s`` is one combination of [sae] (consumed)."""
    from sae_core.plugins import get_component  # lazy: loads pluggy

    arch_name = str(s.pop("arch", "topk"))
    arch = get_component("architecture", arch_name).factory
    if dcfg.transcoder:
        arch.check_transcoder()
    exp_factor = s.pop("exp_factor", None)
    d_sae = s.pop("d_sae", None)
    if d_sae is None:
        d_sae = round(float(exp_factor if exp_factor is not None else 8) * d_in)
    if int(d_sae) < 1:
        raise ConfigError(f"d_sae must be >= 1, got {d_sae}")
    lr = float(s.pop("lr", 3e-4))
    if lr <= 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    name = s.pop("name", None)
    valid = set(arch.hyper_fields()) | set(SAE_COMMON)
    for key in list(s):
        if key in valid:
            continue
        if key in other_keys:  # belongs to another architecture of this sweep
            del s[key]
            continue
        raise ConfigError(
            f"[sae]: unknown key {key!r} for arch {arch_name!r}; valid keys: {', '.join(sorted(valid))}"
        )
    hyper = arch.make_hyper(s, int(d_sae))
    if name is None:
        parts = [arch_name]
        for key, val in [("layer", dcfg.layer), ("layer_out", dcfg.layer_out), ("tokens", dcfg.tokens),
                         ("batch_size", dcfg.batch_size),
                         ("exp_factor", exp_factor), ("d_sae", d_sae), ("lr", lr), *s.items()]:
            if key in swept or (key == "k" and "k" in arch.hyper_fields()):
                parts.append(f"{key}{_fmt(val)}")
        name = "-".join(parts).replace("/", "_")
    return SAEConfig(arch=arch_name, d_sae=int(d_sae), lr=lr, hyper=asdict(hyper), data=dcfg, name=name)


def load_sweep(path: Path) -> dict[str, dict[str, Any]]:
    """Read a sweep TOML: tables data/train/sae only."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--sweep {path} is a directory; pass the sweep TOML file itself")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"sweep file {path} is not UTF-8 text (byte {e.start}); save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"sweep file {path} is not valid TOML: {e}") from None
    unknown = [k for k in doc if k not in ("data", "train", "sae")]
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown table [{unknown[0]}]; valid tables: [data], [train], [sae]")
    for k, v in doc.items():
        if not isinstance(v, dict):
            raise ConfigError(f"sweep file {path}: {k!r} must be a table ([{k}])")
    return {k: doc.get(k, {}) for k in ("data", "train", "sae")}
