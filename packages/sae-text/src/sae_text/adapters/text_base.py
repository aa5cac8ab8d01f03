"""What the language-model adapters share: documents -> windows -> length-sorted batches.

Subclasses (``tlens``, ``hf``) load a model and implement :meth:`TextAdapter.forward_windows`;
this base turns a dataset into fixed-size windows (:mod:`.windows`), runs them through the model
in batches and hands the cache :class:`ActivationBatch` es in dataset order.

Padding is the waste of text caching: a document's last window is short, and a batch padded to
the context computes attention and MLPs on nothing. The windows of ``sort_batches`` consecutive
batches are therefore sorted by length, each forward batch is cut to its longest row, and the
activations are put back in dataset order, padding set to zeros (readers never yield it) — so
the rows of the cache, and a resumed cache, do not depend on how windows were batched.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sae_core.errors import SAEError
from sae_core.io import atomic_write_json
from sae_core.protocols import ActivationBatch, AdapterRequest, Dataset, ModelAdapter

from sae_text.adapters.documents import document_ids
from sae_text.adapters.options import WindowOptions
from sae_text.adapters.windows import SpecialTokens, Window, body_size, crop_offset, document_windows

#: a sorted chunk of windows holds at most this many activation bytes (many batches of a small
#: model, a single batch of a large one at long context)
CHUNK_BYTES = 256 * 2**20


class TextAdapter(ModelAdapter):
    """Base of the text adapters. Subclasses set ``tokenizer``, ``special``, ``context``,
    ``vocab_size``, ``d_model`` and ``layer_names`` and implement :meth:`forward_windows`."""

    modality: ClassVar[str] = "text"

    tokenizer: Any
    special: SpecialTokens
    context: int
    vocab_size: int
    d_model: int
    layer_names: list[str]

    def __init__(self, request: AdapterRequest, window_options: WindowOptions) -> None:
        super().__init__(request)
        self.window_options = window_options

    # -- subclasses ------------------------------------------------------------------------------
    @abstractmethod
    def forward_windows(self, tokens: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(batch, length) tokens and attention mask -> (batch, n_layers, length, d_model)."""

    # -- shared ----------------------------------------------------------------------------------
    def spec_extra(self) -> dict[str, Any]:
        """The cache metadata both adapters record (the viewer and analyses read these keys)."""
        wo = self.window_options
        return {
            "context_size": self.context,
            "checkpoint": self.request.checkpoint,
            "options": dict(self.request.options),
            "include_special": wo.include_special,
            "max_windows_per_doc": wo.max_windows,
            "random_crop": wo.random_crop,
            "special_token_ids": sorted(set(self.special.prefix + self.special.suffix)),
            "pad_token_id": self.special.pad,
            "example_unit": "doc",
        }

    def write_extras(self, cache_dir: Path) -> None:
        """``vocab.json``: token strings by id, so viewers show text without the model."""
        from sae_core.checkpoint.filenames import VOCAB_FILE

        path = Path(cache_dir) / VOCAB_FILE
        if path.exists():
            return
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        atomic_write_json(path, vocab, indent=None)  # durable: never a partial vocab.json

    def windows(self, dataset: Dataset, start: int) -> Iterator[Window]:
        """The windows of ``dataset[start:]`` in order (documents read once, front to back)."""
        wo = self.window_options
        body = body_size(self.context, self.special)
        for doc, ids in document_ids(dataset, start, self.tokenizer, self.vocab_size, self.special):
            offset = crop_offset(doc, len(ids), body, wo.max_windows, wo.seed) if wo.random_crop else 0
            yield from document_windows(doc, ids, self.context, self.special, wo.max_windows, offset)

    def attention_from_index(self, index: np.ndarray) -> np.ndarray:
        """(n, T) bool: non-padding positions of cached windows, rebuilt from their layout
        (prefix specials, body tokens with position >= 0, suffix specials, then padding); token
        ids cannot tell padding apart when the pad id is also BOS/EOS (GPT-2)."""
        n_real = len(self.special.prefix) + (index["position"] >= 0).sum(1) + len(self.special.suffix)
        return np.arange(index.shape[1])[None, :] < n_real[:, None]

    def chunk_rows(self, batch_size: int) -> int:
        """Windows sorted together: ``sort_batches`` batches, fewer if their activations would
        exceed :data:`CHUNK_BYTES`, never less than one batch."""
        row_bytes = len(self.layer_names) * self.context * self.d_model * 4
        return max(batch_size, min(batch_size * self.window_options.sort_batches, CHUNK_BYTES // max(row_bytes, 1)))

    def forward_sorted(self, chunk: list[Window], batch_size: int) -> torch.Tensor:
        """(len(chunk), n_layers, context, d_model) activations of ``chunk`` in its order, computed
        in length-sorted batches each cut to its longest window."""
        device = torch.device(self.request.device)
        tokens = np.stack([w.tokens for w in chunk])  # (n, T)
        real = ~np.stack([w.pad for w in chunk])  # (n, T)
        lengths = real.sum(1)
        order = np.argsort(-lengths, kind="stable")
        out: torch.Tensor | None = None
        for lo in range(0, len(chunk), batch_size):
            rows = order[lo : lo + batch_size]
            n = int(lengths[rows].max())
            attention = torch.from_numpy(real[rows, :n]).to(device)  # (b, n)
            acts = self.forward_windows(torch.from_numpy(tokens[rows, :n]).to(device), attention.long())  # (b, L, n, d)
            acts = acts.masked_fill(~attention[:, None, :, None], 0)  # padding: zeros, whatever its batch
            if out is None:
                out = acts.new_zeros((len(chunk), acts.shape[1], self.context, acts.shape[3]))
            out[torch.from_numpy(rows).to(acts.device), :, :n] = acts
        assert out is not None
        return out

    def iter_batches(
        self, dataset: Dataset, *, start: int = 0, batch_size: int = 64, num_workers: int = 0
    ) -> Iterator[ActivationBatch]:
        if not self.layer_names:
            raise SAEError("no layers given; pass --layers 3 (a block index) or --hook NAME")
        include_special = self.window_options.include_special
        chunk: list[Window] = []
        rows = self.chunk_rows(batch_size)

        def flush() -> Iterator[ActivationBatch]:
            acts = self.forward_sorted(chunk, batch_size)
            for lo in range(0, len(chunk), batch_size):
                part = chunk[lo : lo + batch_size]
                pad = np.stack([w.pad for w in part])
                special = np.stack([w.special for w in part])
                yield ActivationBatch(
                    acts=acts[lo : lo + batch_size],
                    example_ids=np.array([w.doc for w in part], dtype=np.int64),
                    token_ids=np.stack([w.tokens for w in part]).astype(np.int32),
                    valid=~pad & (include_special | ~special),
                    positions=np.stack([w.positions for w in part]),
                )
            chunk.clear()

        for window in self.windows(dataset, start):
            chunk.append(window)
            if len(chunk) == rows:
                yield from flush()
        if chunk:
            yield from flush()


def special_tokens_of(tokenizer: Any, *, prepend_bos: bool | None) -> SpecialTokens:
    """The special tokens the tokenizer puts around a text ([CLS] … [SEP], <s> …), found by
    tokenising a probe with and without them; ``prepend_bos`` adds the BOS token when the
    tokenizer adds nothing (GPT-2: the usual SAE practice, so position 0 is not a document token).
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    plain = tokenizer("sparse", add_special_tokens=False)["input_ids"]
    full = tokenizer("sparse", add_special_tokens=True)["input_ids"]
    prefix: list[int] = []
    suffix: list[int] = []
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            prefix, suffix = list(full[:i]), list(full[i + len(plain) :])
            break
    if prepend_bos is None:
        prepend_bos = not prefix and not suffix
    if prepend_bos and not prefix and tokenizer.bos_token_id is not None:
        prefix = [tokenizer.bos_token_id]
    if prepend_bos is False and prefix == [tokenizer.bos_token_id]:
        prefix = []
    return SpecialTokens(prefix, suffix, pad)


#: probe forwards run 2 sequences of these lengths: a tensor is per-token when one of its first two
#: dims follows the length (and the other the batch) while its trailing dims stay put
PROBE_LENGTHS = (5, 7)
PROBE_BATCH = 2


def per_token_layout(name: str, shapes: list[tuple[int, ...]]) -> tuple[bool, int] | None:
    """``(seq_first, width)`` of a hook whose outputs on the probe batches had ``shapes``
    (one per :data:`PROBE_LENGTHS`), or ``None`` when it is not one vector per token (attention
    patterns (batch, heads, pos, pos), pooled outputs (batch, d), token ids (batch, pos))."""
    trailing = {s[2:] for s in shapes}
    if len(trailing) != 1 or any(len(s) < 3 for s in shapes):
        return None
    width = int(np.prod(shapes[0][2:]))
    if all(s[:2] == (PROBE_BATCH, n) for s, n in zip(shapes, PROBE_LENGTHS, strict=True)):
        return False, width
    if all(s[:2] == (n, PROBE_BATCH) for s, n in zip(shapes, PROBE_LENGTHS, strict=True)):
        return True, width
    return None


def not_per_token_message(name: str, shapes: list[tuple[int, ...]]) -> str:
    return (f"hook {name!r} does not give one vector per token (its output is {tuple(shapes[0])} for "
            f"{PROBE_BATCH} sequences of {PROBE_LENGTHS[0]} tokens): SAEs need (batch, pos, ...) activations; "
            "pick another hook (`sae hooks` lists the usable ones)")


def common_width(widths: dict[str, int]) -> int:
    """Every cached layer shares one ``d_model``; hooks of different widths go to separate caches."""
    if len(set(widths.values())) > 1:
        listed = ", ".join(f"{k} ({v})" for k, v in widths.items())
        raise SAEError(f"hooks of different widths cannot share a cache: {listed}; cache them with separate commands")
    return next(iter(widths.values()))
