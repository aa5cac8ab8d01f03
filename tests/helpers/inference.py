"""Helpers for tests that run models with SAEs attached: an SAE that reconstructs exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def perfect_tensors(d: int) -> dict[str, torch.Tensor]:
    """ReLU SAE with d_sae = 2d, W_enc = [I, −I], W_dec = [I; −I], zero biases:
    f = [relu(x), relu(−x)] and x̂ = relu(x) − relu(−x) = x exactly (every other product is 0)."""
    eye = torch.eye(d)
    return {"W_enc": torch.cat([eye, -eye], 1), "b_enc": torch.zeros(2 * d), "W_dec": torch.cat([eye, -eye], 0),
            "b_dec": torch.zeros(d)}


def perfect_cfg(d: int, source: dict[str, Any], name: str = "perfect") -> dict[str, Any]:
    return {"name": name, "architecture": "relu", "d_in": d, "d_sae": 2 * d, "hyper": {},
            "normalization": {"folded": True, "scale": 1.0}, "source": source}


def perfect_sae(d: int, layer: str, tokens: str = "all") -> Any:
    from sae_core.checkpoint import build_sae

    return build_sae(perfect_cfg(d, {"layer": layer, "tokens": tokens}), perfect_tensors(d))


def perfect_checkpoint(like: Path, out: Path) -> Path:
    """A perfect SAE checkpoint reading what checkpoint ``like`` reads (same cache, layer, tokens)."""
    from sae_core.checkpoint import save_sae

    cfg = json.loads((like / "cfg.json").read_text())
    d = int(cfg["d_in"])
    return save_sae(out, perfect_tensors(d), perfect_cfg(d, cfg["source"], out.name))
