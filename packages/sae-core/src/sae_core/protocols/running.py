"""What an adapter exchanges when it *runs* its model with callbacks at layers.

Caching only reads activations; using an SAE (``sae_core.inference``: record features, splice the
reconstruction, ablate/clamp/steer features; ``sae features|steer|ablate``; the ``downstream``
analysis) runs the model with the layer's activations replaced. An adapter opts in by
implementing :meth:`~sae_core.protocols.ModelAdapter.run_with_hooks` (and ``make_inputs``,
``cached_inputs``, ``generate`` for causal LMs) over these two types, so the SAE math lives once in
sae-core and each adapter has one hooking implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

#: A callback at one layer: ``hook(acts, valid) -> new acts or None (unchanged)``. ``acts`` is the
#: layer's output, batch first ``(batch, tokens, d_model)`` whatever the model's own layout;
#: ``valid`` ``(batch, tokens)`` bool marks the positions an SAE of this model may read (the
#: caching rule: no padding, no BOS/CLS/SEP unless the cache kept specials).
LayerHook = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor | None"]


@dataclass
class ModelInputs:
    """A batch the adapter's model can run, with the per-position facts SAEs and metrics need.

    Rows are what the cache calls examples: text windows (a long text becomes several rows) or
    images. ``example`` maps each row back to the input it came from.
    """

    data: Any  # what the model takes: token ids (batch, tokens) int64, pixels (batch, 3, H, W), ...
    valid: np.ndarray  # (batch, tokens) bool: positions an SAE may read (as ``valid`` in the cache index)
    kinds: list[str]  # (tokens,) kind of each position: "cls" | "register" | "patch" | "token"
    example: np.ndarray  # (batch,) int64: which input (or cache example id) each row comes from
    attention: np.ndarray | None = None  # (batch, tokens) bool: not padding (text)
    document: np.ndarray | None = None  # (batch, tokens) bool: document tokens, never BOS/CLS/SEP/padding (text)
    positions: np.ndarray | None = None  # (batch, tokens) int: offset in the source text, -1 for specials/padding
    token_ids: np.ndarray | None = None  # (batch, tokens) int (text)
    labels: list[list[str]] | None = None  # readable token strings per row (text), for display
    images: list[Any] | None = None  # the original images, one per row (for heatmaps)

    @property
    def shape(self) -> tuple[int, int]:
        """(batch, tokens)."""
        return tuple(self.valid.shape)  # type: ignore[return-value]


@dataclass
class ModelOutput:
    """What :meth:`ModelAdapter.run_with_hooks` returns (nothing when asked for no output).

    ``kind`` says which metrics apply: ``"lm"`` (next-token ``logits`` (batch, tokens, vocab):
    cross-entropy and KL divergence) or ``"embedding"`` (a final ``embedding`` (batch, dim):
    cosine; with ``logit_scale`` (CLIP) also zero-shot-style logits between embeddings).
    """

    kind: str | None = None
    logits: torch.Tensor | None = None  # (batch, tokens, vocab)
    embedding: torch.Tensor | None = None  # (batch, dim)
    embedding_name: str = ""  # what the embedding is, for reports ("mean-pooled final hidden state")
    logit_scale: float | None = None  # CLIP's learned temperature (exp of logit_scale)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generation:
    """Greedy continuation of a prompt (``ModelAdapter.generate``)."""

    prompt: str
    text: str  # the generated continuation only
    token_ids: list[int]  # the generated tokens
