"""Shared by the tests (moved from tests/vision/test_vision.py)."""

from __future__ import annotations

TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 3, "width": 48, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}}
