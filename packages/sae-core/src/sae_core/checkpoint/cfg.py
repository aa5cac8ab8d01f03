"""The typed ``cfg.json`` of a checkpoint: what the SAE is, where its data came from, its metrics.

Read leniently (unknown keys of newer or older versions are dropped) unless ``strict``; a
third-party tool reads our checkpoints with :func:`read_cfg` instead of guessing keys. File
names live in :mod:`sae_core.checkpoint.filenames`. Imports nothing heavy (no torch).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_core.checkpoint.filenames import CFG_FILE, FORMAT, FORMAT_VERSION
from sae_core.dataclass_parsing import from_dict
from sae_core.errors import CheckpointError, ConfigError
from sae_core.interop.detect import FOREIGN, foreign_hint, formats_line


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
    (:mod:`sae_core.validation_split`); analyses read them by default. ``fraction`` 0: no split (older runs)."""

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
        raise CheckpointError(foreign_checkpoint(file.parent) or f"{file.parent} is not an SAE checkpoint (no {CFG_FILE}); pass "
                              "a directory made by `sae train`") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(f"{file} is corrupt ({e}); train or download that SAE again") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{file} is not a checkpoint config (not a JSON object); train or download that SAE again")
    for key in ("architecture", "d_in", "d_sae"):
        if key not in doc:

            raise CheckpointError(foreign_checkpoint(file.parent) or f"{file} lacks {key!r}: {file.parent} is not an SAE checkpoint "
                                  f"in any format we read ({formats_line()})")
    try:
        return SAECheckpointConfig.from_json(doc, strict=strict, where=str(file))
    except ConfigError as e:
        raise CheckpointError(f"{e}; train or download that SAE again") from None


def foreign_checkpoint(path: Path, *, saelens: bool = True) -> str | None:
    """The one-line answer for a checkpoint another library wrote (which one, how to convert).
    ``saelens=False``: SAELens directories pass (commands have always taken them as they are)."""

    return foreign_hint(path, FOREIGN if saelens else tuple(f for f in FOREIGN if f != "saelens"))
