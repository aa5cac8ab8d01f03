"""Resumable training state of one sweep group: per-SAE tensors in safetensors, scalars in JSON.

Tensors are keyed ``<sae name>/<tensor>``, not by bank position, so a state can be resumed by
any split of the SAEs into banks and ranks (``torchrun`` with another world size, or another
``--parallel`` mode). Each writing rank saves its SAEs to its own file under a temporary name and
renames it; once every rank is done, rank 0 replaces ``state.json`` (the commit point) listing
the files of this step, then deletes the files of earlier steps. An interruption at any moment
leaves the previous state intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from sae_core.errors import CheckpointError

FORMAT = 2


def tensors_name(step: int, rank: int) -> str:
    return f"tensors-{step:09d}-r{rank}.safetensors"


def save_tensors(dirpath: Path, step: int, rank: int, tensors: dict[str, torch.Tensor]) -> str:
    """One rank's part of the state at ``step``; returns its file name."""
    from safetensors.torch import save_file

    dirpath.mkdir(parents=True, exist_ok=True)
    name = tensors_name(step, rank)
    tmp = dirpath / (name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, dirpath / name)
    return name


def commit(dirpath: Path, files: list[str], scalars: dict[str, Any]) -> None:
    """Make the state listing ``files`` the current one, then drop older tensor files."""
    doc = {**scalars, "format": FORMAT, "files": files}
    tmp_json = dirpath / "state.json.tmp"
    tmp_json.write_text(json.dumps(doc, indent=2))
    os.replace(tmp_json, dirpath / "state.json")
    for old in dirpath.glob("tensors-*.safetensors"):
        if old.name not in files:
            old.unlink(missing_ok=True)


def load_state(dirpath: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """All tensors of the committed state (every rank's file) and its scalars; None if none."""
    from safetensors.torch import load_file

    if not (dirpath / "state.json").is_file():
        return None
    doc = json.loads((dirpath / "state.json").read_text())
    if doc.get("format") != FORMAT:
        raise CheckpointError(
            f"training state {dirpath} was written by an older version of sae; it cannot be resumed — "
            "start the run again (its finished checkpoints stay usable)"
        )
    tensors: dict[str, torch.Tensor] = {}
    for name in doc["files"]:
        tensors.update(load_file(str(dirpath / name)))
    return tensors, doc
