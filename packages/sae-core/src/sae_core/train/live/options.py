"""What a live training run reads: the model, the hooks, the dataset and how the model is run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_core.errors import ConfigError

#: default mixing buffer of a live run, in token positions (``--buffer-tokens``)
DEFAULT_BUFFER_TOKENS = 131_072


@dataclass
class LiveConfig:
    """``sae train --adapter A --model M --layers L --data DATASET``: the source of activations.

    The same fields as ``sae cache`` takes, so that the live run's activations (and the cache it
    writes with ``also_cache``) are those ``sae cache`` would give.
    """

    adapter: str
    model: str
    layers: list[str]
    data: str
    data_options: dict[str, Any] = field(default_factory=dict)  # split, field, limit, --data-opt
    checkpoint: str | None = None
    context_size: int | None = None
    options: dict[str, str] = field(default_factory=dict)  # the adapter's --opt
    device: str | None = None  # the model's device (None: the training device)
    dtype: str = "float32"  # activations are rounded to this (the also-cache's storage dtype)
    model_batch_size: int = 64  # examples per forward pass
    num_workers: int = 0  # data-loading workers (image adapters)
    also_cache: str | None = None  # store root: write the cache as the model runs
    store: str = "local"
    prefetch_windows: int = 1  # windows computed ahead of the one being trained on
    #: torch threads of the model's forwards (its background thread); None: torch's setting, as the
    #: training thread's. On CPU the model and the SAE share the cores: 1 + the rest for training
    #: avoids oversubscribing them (``--model-threads``)
    model_threads: int | None = None

    def __post_init__(self) -> None:
        if not self.layers:
            raise ConfigError("live training needs --layers (block indices) or --hook NAME")
        for name, value in (("model_batch_size", self.model_batch_size), ("prefetch_windows", self.prefetch_windows)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.model_threads is not None and self.model_threads < 1:
            raise ConfigError(f"--model-threads must be >= 1, got {self.model_threads}; drop it to keep torch's setting")

    def request(self, device: str) -> Any:
        from sae_core.protocols.adapter import AdapterRequest  # lazy: loads numpy

        return AdapterRequest(model=self.model, layers=list(self.layers), checkpoint=self.checkpoint,
                              device=self.device or device, context_size=self.context_size,
                              options=dict(self.options))

    def also_cache_root(self) -> Path | None:
        return Path(self.also_cache) if self.also_cache else None
