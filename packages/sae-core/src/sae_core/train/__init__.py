"""The shared-batch multi-SAE trainer: run.py runs a sweep, group.py trains one data group
of it, bookkeeping.py writes down its metrics, state and checkpoints, flags.py is `sae train`'s flags.

Names load on first use (PEP 562): importing ``sae_core.train.config`` or ``.rundir`` (which the
commands use to check a run before anything heavy) does not import torch.
"""

from __future__ import annotations

from sae_core.lazy import lazy_names

_WHERE = {
    "DataConfig": "config", "SAEConfig": "config", "TrainConfig": "config", "TrainSettings": "config",
    "expand": "config", "load_sweep": "config", "run_training": "run",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
