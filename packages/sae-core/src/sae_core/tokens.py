"""Token strings of a text cache, without its model: the ``vocab.json`` text adapters write.

One place for turning token ids into text, shared by the viewer (:mod:`sae_viewer.data`) and the
analyses that name tokens (``logit-effects``, ``feature-summaries``), so both show a token the
same way. Imports nothing heavy.
"""

from __future__ import annotations

import json
from pathlib import Path

from sae_core.checkpoint.filenames import VOCAB_FILE


def load_vocab(cache: str | Path) -> list[str] | None:
    """Token pieces by id from ``CACHE/vocab.json`` (written by text adapters' ``write_extras``),
    or None when the cache has none (image caches, or adapters that write no vocabulary)."""
    path = Path(cache) / VOCAB_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return [str(t) for t in doc] if isinstance(doc, list) else None


def detokenize(tok: str) -> str:
    """Readable form of a tokenizer's piece (WordPiece '##', GPT-2 'Ġ', SentencePiece '▁'):
    a word-initial piece gets a leading space, a continuation piece none."""
    if tok.startswith("##"):
        return tok[2:]
    return " " + tok.replace("Ġ", "").replace("▁", "") if tok[:1] in ("Ġ", "▁") else " " + tok


def token_string(vocab: list[str] | None, token_id: int) -> str:
    """The readable string of ``token_id`` (``detokenize``), or ``"<id N>"`` without a vocabulary
    entry for it."""
    if vocab is None or not 0 <= int(token_id) < len(vocab):
        return f"<id {int(token_id)}>"
    return detokenize(vocab[int(token_id)])
