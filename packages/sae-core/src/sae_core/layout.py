"""The on-disk layout of SAE checkpoints and training runs: file names and the typed ``cfg.json``.

This module is the one owner of that layout. Every reader and writer (trainer, loader,
analyses, exporters, Hub, viewer) takes file names and ``cfg.json`` fields from here, so a
change of format is made once, and a third-party tool can read our checkpoints by importing
:class:`SAECheckpointConfig` instead of guessing keys. It imports nothing heavy (no torch), so
the viewer and ``sae info`` can use it.

A checkpoint directory::

    cfg.json            SAECheckpointConfig (what the SAE is, where its data came from, metrics)
    sae.safetensors     W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],
                        plus the architecture's extra tensors (threshold, r_mag, ...); a
                        transcoder's W_dec and b_dec are [d_sae, d_out] and [d_out]
    metrics.jsonl       one JSON line per log step of training
    feature_stats.*, top_examples.*, quantile_examples.*, reconstruction.json, downstream.json,
    neighbours.safetensors, cooccurrence.*, logit_effects.*, feature_summaries.jsonl, probe.*
    activations/        (the feature activation database)                  (``sae analyze``)
    ablation.json       ablation studies (``sae ablate``)
    probe.json, probe.safetensors   how well latents predict labels (``sae probe``)

A run directory holds one checkpoint directory per SAE, ``config.json`` (the TrainConfig, with
the cache recorded by path and fingerprint), ``sweep.json`` (final metrics of every SAE) and
``state/`` (resumable training state).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_core.errors import CheckpointError, ConfigError

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
METRICS_FILE = "metrics.jsonl"
RUN_CONFIG_FILE = "config.json"
SWEEP_FILE = "sweep.json"
STATE_DIR = "state"

#: results of the built-in analyses, written beside the checkpoint and read by the viewer
FEATURE_STATS_FILE = "feature_stats.safetensors"
FEATURE_STATS_SUMMARY_FILE = "feature_stats.json"
TOP_EXAMPLES_FILE = "top_examples.safetensors"
TOP_EXAMPLES_META_FILE = "top_examples.json"
RECONSTRUCTION_FILE = "reconstruction.json"
DOWNSTREAM_FILE = "downstream.json"
NEIGHBOURS_FILE = "neighbours.safetensors"
COOCCURRENCE_FILE = "cooccurrence.safetensors"
COOCCURRENCE_META_FILE = "cooccurrence.json"
LOGIT_EFFECTS_FILE = "logit_effects.safetensors"
LOGIT_EFFECTS_META_FILE = "logit_effects.json"
FEATURE_SUMMARIES_FILE = "feature_summaries.jsonl"
#: results of ``sae probe`` / the ``probe`` analysis (per label: latents ranked by AP, the linear probe)
PROBE_FILE = "probe.safetensors"
PROBE_META_FILE = "probe.json"
QUANTILE_EXAMPLES_FILE = "quantile_examples.safetensors"
QUANTILE_EXAMPLES_META_FILE = "quantile_examples.json"
#: the feature activation database (``sae analyze``, ``sae query``): a directory of .npy shards
#: whose ``manifest.json`` is written last (no manifest: not a complete database)
ACTIVATION_DB_DIR = "activations"
ACTIVATION_DB_MANIFEST = "manifest.json"
#: results of ``sae ablate`` (merged per feature set), written beside the checkpoint
ABLATION_FILE = "ablation.json"

#: token id -> piece, written into a text cache's directory by text adapters (``write_extras``)
VOCAB_FILE = "vocab.json"

#: SAELens's checkpoint layout (``cfg.json`` + this), recognised by :func:`sae_core.checkpoint.load_sae`
SAELENS_WEIGHTS_FILE = "sae_weights.safetensors"

FORMAT = "sae"
FORMAT_VERSION = 1


@dataclass
class Normalization:
    """How inputs were scaled in training. ``folded``: the scale is already in the weights, so
    the checkpoint takes raw activations (always true for checkpoints written by ``sae train``)."""

    folded: bool = True
    scale: float = 1.0
    #: transcoders: the target's scale (y' = scale_out·y in training); None for SAEs
    scale_out: float | None = None


@dataclass
class SourceInfo:
    """Where the SAE's training data came from (all optional: imported SAEs know little)."""

    cache: str | None = None  # absolute path of the cache at training time
    cache_fingerprint: str | None = None  # CacheMetadata.fingerprint(): the cache's identity
    adapter: str | None = None
    model: str | None = None
    layer: str | None = None  # canonical layer/hook name in the cache
    layer_index: int | None = None  # its index among the cache's layers
    #: transcoders: the layer/hook whose activations it reconstructs, and its index (None: an SAE)
    layer_out: str | None = None
    layer_out_index: int | None = None
    tokens: str = "all"  # token filter: all | cls | patch | register | token
    d_model: int | None = None
    dataset: str | None = None  # the --data spec
    #: the library whose format the SAE was read from ("saelens", "sparsify", "dictionary_learning",
    #: "saev"); None for SAEs trained here
    imported_from: str | None = None


@dataclass
class TrainInfo:
    """The training settings of this SAE (None where unknown, e.g. imported SAEs)."""

    lr: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    lr_warmup_steps: int | None = None
    lr_decay_frac: float | None = None
    sparsity_warmup_steps: int | None = None
    normalize: bool | None = None
    world_size: int | None = None
    parallel: str | None = None  # "data" | "sae" under torchrun, else None


@dataclass
class ValInfo:
    """The validation split the SAE was trained with: whole examples training never read
    (:mod:`sae_core.split`); analyses read them by default. ``fraction`` 0: no split (older runs)."""

    fraction: float = 0.0
    seed: int = 0
    tokens: int | None = None  # validation tokens evaluated every eval_every steps


@dataclass
class SAECheckpointConfig:
    """Contents of a checkpoint's ``cfg.json``.

    Read leniently (:meth:`from_json` with ``strict=False``): keys this version does not know are
    dropped and missing optional ones take their defaults, so older and newer versions of sae
    read each other's checkpoints. ``strict=True`` is for configs a person wrote by hand.
    ``metrics`` holds the final metrics of training (``fvu`` and ``l0`` in inference mode on the
    batches after the last step, ``dead_frac``, ``dense_frac``, loss terms, ``final_tokens``).

    A *transcoder* (``d_out`` set) encodes activations of ``source.layer`` and reconstructs those
    of ``source.layer_out`` (width ``d_out``); its metrics are against that target. The
    transcoder fields are omitted from the JSON of SAEs, whose cfg.json is as before.
    """

    architecture: str
    d_in: int
    d_sae: int
    #: transcoders: the width of the target it reconstructs (None: an SAE, which reconstructs its input)
    d_out: int | None = None
    name: str = ""
    hyper: dict[str, Any] = field(default_factory=dict)
    #: False for architectures whose codes may be negative (firing is always ``code != 0``)
    non_negative_codes: bool = True
    normalization: Normalization = field(default_factory=Normalization)
    source: SourceInfo = field(default_factory=SourceInfo)
    train: TrainInfo = field(default_factory=TrainInfo)
    val: ValInfo = field(default_factory=ValInfo)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: for ``<sae>/best/`` checkpoints (``--keep-best``): ``{"step", "val_fvu"}`` of that export
    best: dict[str, Any] | None = None
    #: SAEs converted by ``sae import``: ``{"format", "path", "peer_config", "sae_version"}``, where
    #: it came from and the peer's own config as it was (None for SAEs trained here)
    provenance: dict[str, Any] | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not self.architecture:
            raise ConfigError("cfg.json: architecture is empty; name the architecture that built the SAE")
        if self.d_in < 1 or self.d_sae < 1:
            raise ConfigError(f"cfg.json: d_in and d_sae must be >= 1, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.d_out is not None and self.d_out < 1:
            raise ConfigError(f"cfg.json: d_out must be >= 1 (or absent for an SAE), got {self.d_out}")

    @property
    def is_transcoder(self) -> bool:
        """Whether this is a transcoder (input ``source.layer``, target ``source.layer_out``)."""
        return self.d_out is not None

    @property
    def width_out(self) -> int:
        """Width of what the decoder writes: ``d_out`` for transcoders, ``d_in`` for SAEs."""
        return self.d_in if self.d_out is None else self.d_out

    @classmethod
    def from_json(cls, doc: Any, *, strict: bool = False, where: str = CFG_FILE) -> SAECheckpointConfig:
        """Build from a parsed ``cfg.json``; bad content is a one-line :class:`ConfigError`."""
        from sae_core.config import from_dict

        if not isinstance(doc, dict):
            raise ConfigError(f"{where} is not a checkpoint config (not a JSON object)")
        return from_dict(cls, doc, strict=strict, where=where)

    def to_json(self) -> dict[str, Any]:
        """The JSON document (key order as written since format version 1)."""
        d = dataclasses.asdict(self)
        if d["source"]["imported_from"] is None:  # only imported SAEs carry it
            del d["source"]["imported_from"]
        for table, key in (("source", "layer_out"), ("source", "layer_out_index"), ("normalization", "scale_out")):
            if d[table][key] is None:  # only transcoders carry them: an SAE's cfg.json is as before
                del d[table][key]
        order = ["format", "format_version", "name", "architecture", "d_in", "d_sae", "d_out", "hyper",
                 "non_negative_codes", "normalization", "source", "train", "val", "metrics", "best", "provenance"]
        return {k: d[k] for k in order if k not in ("best", "d_out", "provenance") or d[k] is not None}


def read_cfg(path: str | Path, *, strict: bool = False) -> SAECheckpointConfig:
    """The ``cfg.json`` of checkpoint directory ``path`` (or the file itself); a missing, corrupt
    or incomplete file is a one-line :class:`CheckpointError` naming it and the fix."""
    path = Path(path)
    file = path if path.name == CFG_FILE and path.is_file() else path / CFG_FILE
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(_foreign(file.parent) or f"{file.parent} is not an SAE checkpoint (no {CFG_FILE}); pass "
                              "a directory made by `sae train`") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(f"{file} is corrupt ({e}); train or download that SAE again") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{file} is not a checkpoint config (not a JSON object); train or download that SAE again")
    for key in ("architecture", "d_in", "d_sae"):
        if key not in doc:
            from sae_core.interop.detect import formats_line

            raise CheckpointError(_foreign(file.parent) or f"{file} lacks {key!r}: {file.parent} is not an SAE checkpoint "
                                  f"in any format we read ({formats_line()})")
    try:
        return SAECheckpointConfig.from_json(doc, strict=strict, where=str(file))
    except ConfigError as e:
        raise CheckpointError(f"{e}; train or download that SAE again") from None


def _foreign(path: Path, *, saelens: bool = True) -> str | None:
    """The one-line answer for a checkpoint another library wrote (which one, how to convert).
    ``saelens=False``: SAELens directories pass (commands have always taken them as they are)."""
    from sae_core.interop.detect import FOREIGN, foreign_hint

    return foreign_hint(path, FOREIGN if saelens else tuple(f for f in FOREIGN if f != "saelens"))


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint directory (ours or SAELens's: it has a ``cfg.json``)."""
    return (Path(path) / CFG_FILE).is_file()


def find_checkpoints(path: str | Path) -> list[Path]:
    """The checkpoint directories in ``path``: itself, or the SAEs of a run directory (in the
    order of its ``sweep.json``, else by name). A checkpoint another library wrote (sparsify's
    folders share our file names) is a one-line error naming it and ``sae import``."""
    path = Path(path)
    found = _find(path)
    for ckpt in found:
        hint = _foreign(ckpt, saelens=False)
        if hint is not None:
            raise CheckpointError(hint)
    return found


def _find(path: Path) -> list[Path]:
    if is_checkpoint(path):
        return [path]
    if (path / SWEEP_FILE).is_file():
        try:
            doc = json.loads((path / SWEEP_FILE).read_text())
            found = [path / s["path"] for s in doc.get("saes", []) if is_checkpoint(path / s["path"])]
        except (ValueError, KeyError, TypeError, AttributeError):
            found = []  # a damaged sweep.json: fall back to the directories themselves
        if found:
            return found
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if is_checkpoint(p))
        if found:
            return found
    from sae_core.interop.detect import formats_line

    raise CheckpointError(_foreign(path) or f"no SAE checkpoints in {path}; pass a run directory from `sae train` or "
                          f"one SAE's directory (formats we read: {formats_line()})")
