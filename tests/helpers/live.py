"""Shared by the tests (moved from tests/core/train/test_live.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

# -- text and vision models -------------------------------------------------------------------------
TINY_TLENS = {"n_layers": 2, "d_model": 32, "n_ctx": 64, "d_head": 8, "n_heads": 4, "d_mlp": 64,
              "d_vocab": 30522, "act_fn": "gelu", "normalization_type": "LN", "default_prepend_bos": True}


def _weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(str(p / "sae.safetensors")) for p in sorted(run.iterdir())
            if (p / "sae.safetensors").is_file()}


def assert_same_saes(a: Path, b: Path, *, metrics: bool = True) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa and list(wa) == list(wb)
    for name in wa:
        for k in wa[name]:
            assert torch.equal(wa[name][k], wb[name][k]), (name, k, float((wa[name][k] - wb[name][k]).abs().max()))
        if metrics:
            ma = [{k: v for k, v in json.loads(x).items() if k != "samples_per_s"}
                  for x in (a / name / "metrics.jsonl").read_text().splitlines()]
            mb = [{k: v for k, v in json.loads(x).items() if k != "samples_per_s"}
                  for x in (b / name / "metrics.jsonl").read_text().splitlines()]
            train_keys = [k for k in ma[0] if not k.startswith("val_")]  # validation samples may differ
            assert [[r[k] for k in train_keys] for r in ma] == [[r[k] for k in train_keys] for r in mb]
