"""The shared-batch multi-SAE trainer (see trainer.py)."""

from sae_core.train.config import DataConfig, SAEConfig, TrainConfig, TrainSettings, expand, load_sweep
from sae_core.train.trainer import run_training

__all__ = ["DataConfig", "SAEConfig", "TrainConfig", "TrainSettings", "expand", "load_sweep", "run_training"]
