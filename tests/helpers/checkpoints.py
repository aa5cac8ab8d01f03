"""Shared by the tests (moved from tests/core/interop/test_interop.py)."""

from __future__ import annotations

from pathlib import Path

import torch
from sae_core import TrainContext
from sae_core.archs.ops import make_hyper
from sae_core.checkpoint import save_sae
from sae_core.plugins import get_registry

D_IN, D_SAE = 10, 40


def tiny_checkpoint(tmp_path: Path, arch: str, hyper: dict) -> Path:
    """A trained-looking checkpoint of ours (random weights, biases, thresholds)."""
    cls = get_registry().get("architecture", arch).factory
    bank = cls.build_bank(D_IN, D_SAE, [make_hyper(cls.Hyper, arch, hyper, D_SAE)], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        bank.b_enc.normal_(0, 0.2)
        bank.b_dec.normal_(0, 0.2)
        if arch == "gated":
            bank.r_mag.normal_(0, 0.2)
            bank.b_mag.normal_(0, 0.2)
        if arch == "jumprelu":
            bank.threshold.uniform_(0.1, 0.4)
    if arch in ("batchtopk", "matryoshka"):
        bank.train_forward(torch.randn(64, D_IN), TrainContext(step=0))
    cfg = {"name": arch, "architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "hyper": hyper,
           "source": {"model": "m", "layer": "blocks.0.hook_resid_post"}}
    return save_sae(tmp_path / f"ours-{arch}", bank.export(0, 1.7), cfg)
