"""Finding checkpoints: a checkpoint directory itself, or the SAEs of a run directory."""

from __future__ import annotations

import json
from pathlib import Path

from sae_core.checkpoint.cfg import foreign_checkpoint
from sae_core.checkpoint.filenames import CFG_FILE, SWEEP_FILE
from sae_core.errors import CheckpointError
from sae_core.interop.detect import formats_line


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
        hint = foreign_checkpoint(ckpt, saelens=False)
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

    raise CheckpointError(foreign_checkpoint(path) or f"no SAE checkpoints in {path}; pass a run directory from `sae train` or "
                          f"one SAE's directory (formats we read: {formats_line()})")
