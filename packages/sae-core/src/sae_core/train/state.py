"""Resumable training state of one sweep group: per-SAE tensors in safetensors, scalars in JSON.

Tensors are keyed ``<sae name>/<tensor>``, not by bank position, so a state can be resumed by
any split of the SAEs into banks and ranks (``torchrun`` with another world size, or another
``--parallel`` mode). Each writing rank saves its SAEs to its own file durably (temporary name,
fsync, rename; :mod:`sae_core.io`); once every rank is done, rank 0 copies the current
``state.json`` to ``state.prev.json`` and replaces ``state.json`` (the commit point) listing the
files of this step, then deletes tensor files neither lists. An interruption at any moment
leaves the previous state intact, and two committed states are on disk at all times, so a
state damaged later (a disk error, a truncated copy) still leaves the one before it.

Loading checks everything it reads (JSON, file presence, safetensors headers and sizes) and
turns damage into a one-line :class:`CheckpointError` naming the damaged file and the last good
state with how to fall back to it (delete the damaged ``state.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sae_core.checkpoint.weights import save_weights
from sae_core.errors import CheckpointError
from sae_core.io import atomic_write_json, fsync_dir

FORMAT = 2
STATE = "state.json"
PREV = "state.prev.json"
#: scalars every committed state holds (see GroupTrainer.save)
REQUIRED = ("step", "epoch", "batch_in_epoch", "scale", "tokens_window", "d_in")


def tensors_name(step: int, rank: int) -> str:
    return f"tensors-{step:09d}-r{rank}.safetensors"


def save_tensors(dirpath: Path, step: int, rank: int, tensors: dict[str, torch.Tensor]) -> str:
    """One rank's part of the state at ``step``, written durably; returns its file name."""

    dirpath.mkdir(parents=True, exist_ok=True)
    name = tensors_name(step, rank)
    save_weights(dirpath / name, tensors)  # temporary name, fsync, rename, fsync of the directory
    return name


def commit(dirpath: Path, files: list[str], scalars: dict[str, Any]) -> None:
    """Make the state listing ``files`` the current one (the previous one kept as
    ``state.prev.json``), then drop tensor files that neither lists."""
    doc = {**scalars, "format": FORMAT, "files": files}
    current = dirpath / STATE
    old = _peek(current)
    if old is not None and old.get("step") != doc.get("step"):  # re-saving a step keeps the older prev
        atomic_write_json(dirpath / PREV, old)
    atomic_write_json(current, doc)
    keep = set(files) | set((_peek(dirpath / PREV) or {}).get("files", []))
    for stale in dirpath.glob("tensors-*.safetensors"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    fsync_dir(dirpath)


def _peek(path: Path) -> dict[str, Any] | None:
    """The committed document at ``path``, or None if it is missing or unreadable."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), list) else None


def _read(dirpath: Path, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state committed in ``name``; raises ``ValueError(why)`` when any part of it is damaged."""
    from safetensors import SafetensorError  # lazy: loads safetensors
    from safetensors.torch import load_file  # lazy: loads safetensors

    try:
        doc = json.loads((dirpath / name).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{name} is not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not text") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{name} is not a JSON object")
    if doc.get("format") != FORMAT:
        raise CheckpointError(
            f"training state {dirpath} was written by an older version of sae; it cannot be resumed — "
            "start the run again with --overwrite (its finished checkpoints stay usable)"
        )
    if not isinstance(doc.get("files"), list):
        raise ValueError(f"{name} lacks its file list")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"{name} lacks {', '.join(missing)}")
    tensors: dict[str, torch.Tensor] = {}
    for fname in doc["files"]:
        path = dirpath / fname
        if not path.is_file():
            raise ValueError(f"{fname} (listed in {name}) is missing")
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise ValueError(f"{fname} is damaged ({' '.join(str(e).split())})") from None
    return tensors, doc


def load_state(dirpath: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """All tensors of the committed state (every rank's file) and its scalars; None if none.

    Without ``state.json`` (never committed, or deleted by the user to fall back) the previous
    state ``state.prev.json`` is used if there is one.
    """
    if not (dirpath / STATE).is_file():
        if not (dirpath / PREV).is_file():
            return None
        try:
            return _read(dirpath, PREV)
        except ValueError as e:
            raise CheckpointError(f"training state {dirpath / PREV} is damaged: {e}; no good state is left — "
                                  "start the run again with --overwrite") from None
    try:
        return _read(dirpath, STATE)
    except ValueError as e:
        why = str(e)
    fallback = ""
    if (dirpath / PREV).is_file():
        try:
            _, prev = _read(dirpath, PREV)
            fallback = (f"the last good state is step {prev['step']} ({dirpath / PREV}): delete "
                        f"{dirpath / STATE} and run `sae train --resume` again to continue from it")
        except (ValueError, CheckpointError):
            pass
    if not fallback:
        fallback = "no earlier good state is left: start the run again with --overwrite"
    raise CheckpointError(f"training state {dirpath / STATE} is damaged: {why}; {fallback}")
