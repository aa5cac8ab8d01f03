"""Packing documents into fixed-size token windows.

Each document is tokenised without special tokens and cut into chunks that, with the model's
special tokens added ([CLS] … [SEP] for BERT-style tokenizers, BOS for GPT-style models that
prepend one), fill ``context_size`` positions; the last chunk of a document is padded. Every
window keeps its document id (the index's ``example``) and each token's offset in the document
(``position``; -1 for special and padding tokens), so the viewer can show contexts.

Random crops (``--opt random_crop=true``): a document's windows start at a seeded random offset
instead of token 0, so the first token after BOS/CLS is not always a document's first token —
the fix of the SAELens-fork guide for "position-0" features, which otherwise learn where
documents begin. The offset depends only on ``(seed, document id)``: a resumed cache cuts the
same windows.
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


def body_size(context: int, sp: SpecialTokens) -> int:
    """Document tokens per window: the context minus the special tokens around them."""
    body = context - len(sp.prefix) - len(sp.suffix)
    if body < 1:
        raise ValueError(f"context size {context} leaves no room for tokens next to the special tokens")
    return body


def crop_offset(doc: int, n_tokens: int, body: int, max_windows: int | None, seed: int) -> int:
    """Where a random crop of document ``doc`` (``n_tokens`` long) starts.

    With ``max_windows = k``: the start of ``k`` consecutive windows, uniform over the positions
    that keep them inside the document (``k = 1``: a uniform random crop). Without a limit: a
    shift in ``[0, body)`` of the window grid, so nearly all of the document is still cached.
    """
    span = body * max_windows if max_windows is not None else body
    high = max(0, n_tokens - span) if max_windows is not None else min(body - 1, max(0, n_tokens - body))
    if high == 0:
        return 0
    rng = np.random.default_rng([seed, doc])
    return int(rng.integers(0, high + 1))


def document_windows(
    doc: int, ids: list[int], context: int, sp: SpecialTokens, max_windows: int | None, offset: int = 0
) -> Iterator[Window]:
    """The windows of one document, its tokens from ``offset`` on (0 unless randomly cropped)."""
    body = body_size(context, sp)
    for w, lo in enumerate(range(offset, max(len(ids), offset + 1), body)):
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
