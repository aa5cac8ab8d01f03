"""SAE checkpoints: one directory per SAE with ``cfg.json`` and ``sae.safetensors``.

Loading is tolerant of extra/older fields (:class:`~sae_core.checkpoint.cfg.SAECheckpointConfig` is read
leniently) and strict about what matters: a missing file, an unknown architecture or mismatched
tensor shapes are clear errors. File names are in :mod:`sae_core.checkpoint.filenames`, the
cfg.json fields in :mod:`sae_core.checkpoint.cfg`, the inference module in :mod:`sae_core.checkpoint.sae`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae_core.checkpoint.cfg import SAECheckpointConfig, read_cfg
from sae_core.checkpoint.discovery import is_checkpoint
from sae_core.checkpoint.filenames import CFG_FILE, WEIGHTS_FILE
from sae_core.checkpoint.weights import load_weights, save_weights
from sae_core.errors import CheckpointError
from sae_core.interop.detect import checkpoint_format, matching_formats
from sae_core.io import atomic_write_json

if TYPE_CHECKING:
    import torch

    from sae_core.checkpoint.sae import SAE

def save_sae(path: str | Path, tensors: dict[str, torch.Tensor], cfg: SAECheckpointConfig | dict[str, Any]) -> Path:
    """Write a checkpoint directory durably (weights first, cfg.json last: cfg.json marks it complete).
    A dict ``cfg`` is validated strictly (it is what we are about to promise readers)."""
    if not isinstance(cfg, SAECheckpointConfig):
        cfg = SAECheckpointConfig.from_json({k: v for k, v in cfg.items() if k not in ("format", "format_version")},
                                            strict=True, where="checkpoint config")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_weights(path / WEIGHTS_FILE, tensors, metadata={"format": "sae"})
    atomic_write_json(path / CFG_FILE, cfg.to_json())
    return path


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SAE:
    """Load an SAE checkpoint in any format we read: ours, SAELens, EleutherAI sparsify,
    dictionary_learning or saev (recognised by content, :mod:`sae_core.interop.detect`); an
    unknown or ambiguous one is a one-line :class:`CheckpointError` listing those formats."""

    path = Path(path)
    found = matching_formats(path) if path.exists() else []
    if len(found) > 1 or (not found and not is_checkpoint(path)):
        checkpoint_format(path)  # raises: ambiguous, or no format we read
    if found and found[0] != "sae":
        from sae_core.interop.readers import read_any  # lazy: loads torch, numpy

        _, cfg, tensors = read_any(path)
        return _build(cfg, tensors, device)
    cfg = read_cfg(path)
    if not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{path} has {CFG_FILE} but no {WEIGHTS_FILE}; the checkpoint is incomplete, re-export it")
    return _build(cfg, load_weights(path / WEIGHTS_FILE), device)


def _build(cfg: Any, tensors: dict[str, torch.Tensor], device: Any) -> SAE:
    from sae_core.checkpoint.sae import build_sae  # lazy: loads torch, numpy

    return build_sae(cfg, tensors, device)
