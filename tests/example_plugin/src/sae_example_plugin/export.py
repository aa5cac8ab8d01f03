"""``npz`` — an export format: ``sae.npz`` (the weights as numpy arrays) and ``sae.json`` (cfg.json)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import ClassVar

import numpy as np
from sae_core import (
    WEIGHTS_FILE,
    Exporter,
    ExportError,
    SAECheckpointConfig,
    atomic_write_bytes,
    atomic_write_json,
    load_weights,
)


class NpzExporter(Exporter):
    """Any architecture: W_enc, b_enc, W_dec, b_dec and its extra tensors as float32 arrays."""

    name: ClassVar[str] = "npz"

    def check(self, checkpoint: Path, cfg: SAECheckpointConfig) -> None:
        if not (checkpoint / WEIGHTS_FILE).is_file():
            raise ExportError(f"{checkpoint} has no {WEIGHTS_FILE}; the npz format needs our checkpoint layout")

    def write(self, checkpoint: Path, cfg: SAECheckpointConfig, out: Path) -> None:
        tensors = load_weights(checkpoint / WEIGHTS_FILE)
        buf = io.BytesIO()
        np.savez(buf, **{k: v.float().numpy() for k, v in tensors.items()})
        atomic_write_bytes(out / "sae.npz", buf.getvalue())
        atomic_write_json(out / "sae.json", cfg.to_json())
