"""Which library wrote an SAE checkpoint: recognised by content, never by file name alone.

Several libraries use the same file names (``cfg.json`` + ``sae.safetensors`` is both ours and
EleutherAI sparsify's; ``config.json`` is both our run config and dictionary_learning's trainer
config), so each format is recognised by what its files say: the keys of its JSON config, or
the JSON header line of a saev ``sae.pt``. Nothing here imports torch, so ``read_cfg``, the
viewer and ``sae info`` can name a foreign checkpoint cheaply.

:func:`checkpoint_format` is the one entry point: it returns a format name, or raises a one-line
:class:`~sae_core.errors.CheckpointError` that lists the formats we read (:data:`FORMATS`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sae_core.checkpoint.filenames import CFG_FILE, RUN_CONFIG_FILE, SAELENS_WEIGHTS_FILE, WEIGHTS_FILE
from sae_core.errors import CheckpointError

#: every format we read, with the files that make one (shown in errors and in ``sae import --help``)
FORMATS: dict[str, str] = {
    "sae": "sae (cfg.json with 'architecture' + sae.safetensors)",
    "saelens": "SAELens (cfg.json + sae_weights.safetensors)",
    "sparsify": "EleutherAI sparsify (cfg.json with 'k'/'expansion_factor' + sae.safetensors)",
    "dictionary_learning": "dictionary_learning (ae.pt + config.json with 'trainer')",
    "saev": "saev (sae.pt: a JSON header line, then a state dict)",
}
#: the peer formats ``sae import`` converts (all but ours)
FOREIGN = tuple(f for f in FORMATS if f != "sae")
SAEV_FILE = "sae.pt"
DL_WEIGHTS_FILE = "ae.pt"
DL_CONFIG_FILE = RUN_CONFIG_FILE  # the same name as our run config: told apart by its 'trainer' key
#: keys only sparsify's SparseCoderConfig writes (ours and SAELens's carry 'd_sae' instead)
_SPARSIFY_KEYS = ("expansion_factor", "num_latents", "k", "activation", "transcode")


def formats_line() -> str:
    """The formats we read, for one-line errors."""
    return "; ".join(FORMATS.values())


def read_peer_json(file: Path) -> Any:
    """A peer checkpoint's JSON config; a corrupt one is a one-line :class:`CheckpointError`."""
    try:
        return json.loads(file.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(f"{file} is corrupt ({e}); download that SAE again") from None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def saev_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a saev ``sae.pt`` (its first line), or None if ``path`` is not one."""
    try:
        with open(path, "rb") as f:
            line = f.readline(1 << 20)
        doc = json.loads(line.decode())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    cfg = doc.get("cfg", doc) if isinstance(doc.get("cfg"), dict) else doc  # newer saev nests the cfg
    return cfg if "d_vit" in cfg else None


def saev_file(path: Path) -> Path | None:
    """The saev checkpoint file at ``path`` (the file itself, or ``DIR/sae.pt``), if it is one."""
    file = path / SAEV_FILE if path.is_dir() else path
    return file if file.is_file() and saev_header(file) is not None else None


def matching_formats(path: Path) -> list[str]:
    """Every format ``path`` looks like (more than one: ambiguous)."""
    found: list[str] = []
    if path.is_file():
        return ["saev"] if saev_file(path) else []
    cfg = _json(path / CFG_FILE) if (path / CFG_FILE).is_file() else None
    if isinstance(cfg, dict):
        if "architecture" in cfg and "d_in" in cfg and "d_sae" in cfg and (path / WEIGHTS_FILE).is_file():
            found.append("sae")
        if (path / SAELENS_WEIGHTS_FILE).is_file() and "d_in" in cfg and "d_sae" in cfg:
            found.append("saelens")
        if ("d_in" in cfg and "d_sae" not in cfg and "architecture" not in cfg
                and any(k in cfg for k in _SPARSIFY_KEYS) and (path / WEIGHTS_FILE).is_file()):
            found.append("sparsify")
    if (path / DL_WEIGHTS_FILE).is_file():
        doc = _json(path / DL_CONFIG_FILE)
        if isinstance(doc, dict) and isinstance(doc.get("trainer"), dict) and "dict_class" in doc["trainer"]:
            found.append("dictionary_learning")
    if saev_file(path):
        found.append("saev")
    return found


def sniff_format(path: str | Path) -> str | None:
    """The format of the checkpoint at ``path``, or None if it is none we read (no error)."""
    found = matching_formats(Path(path))
    return found[0] if len(found) == 1 else None


def checkpoint_format(path: str | Path) -> str:
    """The format of the checkpoint at ``path`` (a key of :data:`FORMATS`); an unknown or
    ambiguous one is a one-line :class:`CheckpointError` listing the formats we read."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} is not an SAE checkpoint: it does not exist; pass an SAE checkpoint directory")
    found = matching_formats(path)
    if len(found) == 1:
        return found[0]
    if found:
        raise CheckpointError(f"{path} is ambiguous: it looks like {' and '.join(FORMATS[f] for f in found)}; "
                              "keep one checkpoint per directory")
    raise CheckpointError(f"{path} is not an SAE checkpoint in any format we read ({formats_line()})")


def foreign_hint(path: str | Path, formats: tuple[str, ...] = FOREIGN) -> str | None:
    """For a checkpoint (or a directory of them) another library wrote in one of ``formats``:
    the one-line answer that says which library and how to convert it; None if ``path`` holds none."""
    path = Path(path)
    fmt = sniff_format(path)
    kids: list[str] = []
    if fmt is None and path.is_dir():
        kids = sorted({f for p in path.iterdir() if (f := sniff_format(p)) in formats})
        if len(kids) == 1:
            fmt = kids[0]
    if fmt not in formats:
        return None
    return (f"{path} holds {FORMATS[fmt]} checkpoints, not ours; convert with `sae import {path} --out DIR` "
            "and use DIR (load_sae reads it as it is)")
