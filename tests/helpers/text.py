"""Shared by the tests (moved from tests/text/test_text.py)."""

from __future__ import annotations

TINY_TLENS_CFG = {"n_layers": 2, "d_model": 32, "n_ctx": 64, "d_head": 8, "n_heads": 4, "d_mlp": 64,
            "d_vocab": 30522, "act_fn": "gelu", "normalization_type": "LN", "default_prepend_bos": True}


TEXT_DOCS = [
    "Sparse autoencoders decompose activations into interpretable features.",
    "The quick brown fox jumps over the lazy dog. " * 6,
    "Short one.",
    "Residual streams carry information between transformer blocks, layer after layer.",
]
