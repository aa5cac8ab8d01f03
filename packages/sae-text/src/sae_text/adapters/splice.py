"""The ``downstream`` metrics of the text adapters, whatever runs the model.

``splice_eval`` runs the model three times on each chunk of cached windows — clean, with the
SAE spliced in at a layer, and with the same positions zero-ablated — and turns the outputs
into one JSON-able result: next-token CE for causal LMs (``ce_loss_recovered``), cosine of the
mean-pooled final hidden state for encoders (the sentence embedding of sentence transformers).
The adapters differ only in how they run the model and replace a layer; this module holds the
arithmetic, :func:`replace_per_token` the masking that both apply at the layer, and
:func:`splice_key` what lets the clean and zero-ablated runs be shared by the SAEs of a run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sae_core.errors import SAEError

MODES = ("clean", "spliced", "zero")


def replace_per_token(
    x: torch.Tensor, mask: torch.Tensor, mode: str, replace: Callable[[torch.Tensor], torch.Tensor], *,
    seq_first: bool = False,
) -> torch.Tensor:
    """``x`` (batch, pos, ...) with the per-token vectors at ``mask`` (batch, pos) replaced by
    ``replace(vectors)`` (``mode="spliced"``) or zeros (``"zero"``); trailing dims (heads) are
    flattened for ``replace`` and restored after. ``seq_first``: ``x`` is (pos, batch, ...)."""
    xs = x.transpose(0, 1) if seq_first else x
    flat = xs.reshape(*xs.shape[:2], -1).clone()  # (batch, pos, width)
    flat[mask] = replace(flat[mask]).to(flat.dtype) if mode == "spliced" else 0
    new = flat.view(xs.shape)
    return new.transpose(0, 1) if seq_first else new


def splice_key(layer: str, mode: str, index: np.ndarray, mask: np.ndarray) -> str | None:
    """Memo key of a run that does not depend on the SAE (``clean``, ``zero``): the analysis
    evaluates every SAE of a run on the same rows, so those runs are computed once; ``None``
    for ``spliced``."""
    if mode == "spliced":
        return None
    import hashlib

    h = hashlib.sha256(f"{layer}/{mode}/{index.shape}".encode())
    h.update(np.ascontiguousarray(index["token"]).tobytes())
    h.update(np.ascontiguousarray(index["position"]).tobytes())
    if mode == "zero":
        h.update(np.ascontiguousarray(mask).tobytes())
    return h.hexdigest()


def next_token_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(b, T, vocab) logits, (b, T) tokens -> (b, T-1) NLL of each next token."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, tokens[:, 1:, None])[..., 0]


def mean_pool(hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """(b, T, d) hidden states, (b, T) mask -> (b, d) mean over the real tokens."""
    w = attention[..., None].float()
    return (hidden.float() * w).sum(1) / w.sum(1)


class SpliceScores:
    """Accumulates per-chunk outputs of the three modes into the final metrics."""

    def __init__(self, causal: bool) -> None:
        self.causal = causal
        self.sums = dict.fromkeys(MODES, 0.0)
        self.cos = {"spliced": 0.0, "zero": 0.0}
        self.n_targets = self.n_rows = 0

    def add(self, outputs: dict[str, torch.Tensor], positions: np.ndarray) -> None:
        """``outputs[mode]``: (b, T-1) NLLs (causal) or (b, d) embeddings; ``positions`` (b, T)
        from the index (targets are next tokens that are document tokens, never specials)."""
        if self.causal:
            target = torch.from_numpy(positions[:, 1:] >= 0).to(outputs["clean"].device)
            for mode in MODES:
                self.sums[mode] += float(outputs[mode][target].double().sum())
            self.n_targets += int(target.sum())
        else:
            for mode in self.cos:
                sim = torch.nn.functional.cosine_similarity(outputs["clean"], outputs[mode], dim=-1)
                self.cos[mode] += float(sim.double().sum())
            self.n_rows += len(positions)

    def result(self) -> dict[str, object]:
        if not self.causal:
            n = max(self.n_rows, 1)
            return {"kind": "embedding_cosine", "embedding": "mean-pooled final hidden state",
                    "embedding_cosine": self.cos["spliced"] / n, "embedding_cosine_zero_ablated": self.cos["zero"] / n}
        if self.n_targets == 0:
            raise SAEError("the held-out windows have no next-token targets; cache longer documents or more rows")
        ce = {mode: v / self.n_targets for mode, v in self.sums.items()}
        denom = ce["zero"] - ce["clean"]
        return {"kind": "lm_ce", "ce_clean": ce["clean"], "ce_spliced": ce["spliced"], "ce_zero_ablated": ce["zero"],
                "ce_loss_recovered": (ce["zero"] - ce["spliced"]) / denom if abs(denom) > 1e-12 else None,
                "ce_delta": ce["spliced"] - ce["clean"], "n_targets": self.n_targets}
