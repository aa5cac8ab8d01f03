"""The shared-batch multi-SAE trainer: run.py runs a sweep, group.py trains one data group
of it, bookkeeping.py writes down its metrics, state and checkpoints, flags.py is `sae train`'s flags.

Names load on first use (PEP 562): importing ``sae_core.train.config`` or ``.rundir`` (which the
commands use to check a run before anything heavy) does not import torch.
"""

from __future__ import annotations

from typing import Any

_NAMES = {
    "DataConfig": "config", "SAEConfig": "config", "TrainConfig": "config", "TrainSettings": "config",
    "expand": "config", "load_sweep": "config", "run_training": "run",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'sae_core.train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"sae_core.train.{_NAMES[name]}"), name)
