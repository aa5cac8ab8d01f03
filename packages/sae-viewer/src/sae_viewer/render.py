"""HTML of text windows with per-token highlighting, shared by the viewer and ``sae report``."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from sae_viewer.data import detokenize

#: special tokens that carry no text (skipped in the windows)
SPECIAL = ("[PAD]", "[CLS]", "[SEP]", "<pad>")


def token_window(token_ids: Sequence[int] | np.ndarray, acts: np.ndarray, vocab: list[str] | None,
                 peak: float) -> str:
    """Spans of the window's tokens, each shaded by |activation| relative to ``peak`` (orange:
    positive codes, blue: negative) with the activation as hover title; -1 ids (padding slots),
    special tokens and ids outside the vocabulary are skipped."""
    spans = []
    for tok, act in zip(token_ids, np.asarray(acts, dtype=np.float32), strict=True):
        tok = int(tok)
        if tok < 0 or vocab is None or tok >= len(vocab) or vocab[tok] in SPECIAL:
            continue
        alpha = min(1.0, abs(float(act)) / peak) if peak > 0 else 0.0
        rgb = "0,90,255" if act < 0 else "255,80,0"
        text = html.escape(detokenize(vocab[tok]))
        spans.append(f'<span class="tok" title="{act:.3f}" style="background: rgba({rgb},{alpha:.2f})">{text}</span>')
    return "".join(spans)
