"""Documents as token ids: texts are tokenised, pretokenised documents are taken as they are.

A text dataset's example is a string, or — for pretokenised datasets (an ``input_ids`` column) —
a sequence of token ids, which is used without re-tokenising: tokenising is the slow part of
reading a large corpus, and a pretokenised corpus is how SAELens users share theirs. Ids must
fit the model's vocabulary. A pretokenised document that already starts with the model's prefix
special token (BOS/CLS) or ends with its suffix (SEP) has them dropped, because windows add them
again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sae_core.errors import DataError
from sae_core.protocols import Dataset

from sae_text.adapters.windows import SpecialTokens


def document_ids(
    dataset: Dataset, start: int, tokenizer: Any, vocab_size: int, special: SpecialTokens
) -> Iterator[tuple[int, list[int]]]:
    """``(document id, token ids)`` of ``dataset[start:]`` in order, read with one sequential pass."""
    for doc, example in enumerate(dataset.iter_from(start), start):
        data = example.data
        if isinstance(data, str):
            yield doc, tokenizer(data, add_special_tokens=False, verbose=False)["input_ids"]
        else:
            yield doc, pretokenised(data, doc, vocab_size, special)


def pretokenised(data: Sequence[int] | Any, doc: int, vocab_size: int, special: SpecialTokens) -> list[int]:
    try:
        ids = [int(t) for t in data]
    except (TypeError, ValueError):
        raise DataError(f"document {doc} is neither text nor a list of token ids ({type(data).__name__})") from None
    if ids and (max(ids) >= vocab_size or min(ids) < 0):
        bad = max(ids) if max(ids) >= vocab_size else min(ids)
        raise DataError(
            f"document {doc} has token id {bad}, outside the model's vocabulary of {vocab_size}: the dataset was "
            "tokenised for another model; use its text column (--field text) or a matching model"
        )
    p, s = special.prefix, special.suffix
    if p and ids[: len(p)] == p:
        ids = ids[len(p) :]
    if s and len(ids) >= len(s) and ids[len(ids) - len(s) :] == s:
        ids = ids[: len(ids) - len(s)]
    return ids
