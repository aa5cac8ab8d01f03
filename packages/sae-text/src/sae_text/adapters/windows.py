"""Packing documents into fixed-size token windows.

Each document is tokenised without special tokens and cut into chunks that, with the model's
special tokens added ([CLS] … [SEP] for BERT-style tokenizers, BOS for GPT-style models that
prepend one), fill ``context_size`` positions; the last chunk of a document is padded. Every
window keeps its document id (the index's ``example``) and each token's offset in the document
(``position``; -1 for special and padding tokens), so the viewer can show contexts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass
class Window:
    doc: int
    tokens: np.ndarray  # (context,) int64
    positions: np.ndarray  # (context,) int32, -1 for specials/padding
    special: np.ndarray  # (context,) bool: BOS/CLS/SEP (not padding)
    pad: np.ndarray  # (context,) bool


@dataclass
class SpecialTokens:
    prefix: list[int]  # e.g. [CLS] or [BOS]
    suffix: list[int]  # e.g. [SEP]
    pad: int


def document_windows(doc: int, ids: list[int], context: int, sp: SpecialTokens, max_windows: int | None) -> Iterator[Window]:
    body = context - len(sp.prefix) - len(sp.suffix)
    if body < 1:
        raise ValueError(f"context size {context} leaves no room for tokens next to the special tokens")
    for w, lo in enumerate(range(0, max(len(ids), 1), body)):
        if max_windows is not None and w >= max_windows:
            return
        chunk = ids[lo : lo + body]
        if not chunk:
            return
        toks = sp.prefix + chunk + sp.suffix
        n = len(toks)
        tokens = np.full(context, sp.pad, dtype=np.int64)
        tokens[:n] = toks
        positions = np.full(context, -1, dtype=np.int32)
        positions[len(sp.prefix) : len(sp.prefix) + len(chunk)] = np.arange(lo, lo + len(chunk))
        special = np.zeros(context, dtype=bool)
        special[: len(sp.prefix)] = True
        special[len(sp.prefix) + len(chunk) : n] = True
        pad = np.zeros(context, dtype=bool)
        pad[n:] = True
        yield Window(doc, tokens, positions, special, pad)
