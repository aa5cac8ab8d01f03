"""Resumable training state of one sweep group: tensors in safetensors, scalars in JSON.

Saved atomically (temporary names, then rename) so an interruption never leaves a state that
looks valid but is half written; ``state.json`` is replaced last and is the commit point.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


def save_state(dirpath: Path, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    dirpath.mkdir(parents=True, exist_ok=True)
    step = scalars["step"]
    name = f"tensors-{step:09d}.safetensors"
    tmp = dirpath / (name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, dirpath / name)
    doc = {**scalars, "tensors": name}
    tmp_json = dirpath / "state.json.tmp"
    tmp_json.write_text(json.dumps(doc, indent=2))
    os.replace(tmp_json, dirpath / "state.json")
    for old in dirpath.glob("tensors-*.safetensors"):
        if old.name != name:
            old.unlink()


def load_state(dirpath: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    from safetensors.torch import load_file

    if not (dirpath / "state.json").is_file():
        return None
    doc = json.loads((dirpath / "state.json").read_text())
    return load_file(str(dirpath / doc["tensors"])), doc
