"""Model adapters: turn dataset examples into activations of chosen layers/hooks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from sae_core.protocols.dataset import Dataset


@dataclass
class AdapterRequest:
    """What the user asked ``sae cache`` for; each adapter validates the parts it uses."""

    model: str
    layers: list[str]  # as typed: "-2", "11", "blocks.6.hook_resid_post"
    checkpoint: str | None = None
    device: str = "cpu"
    context_size: int | None = None  # text adapters: tokens per window
    options: dict[str, str] = field(default_factory=dict)  # adapter-specific `--opt key=value`


@dataclass
class ActivationSpec:
    """Shape and identity of what an adapter produces; becomes the cache's metadata."""

    adapter: str
    model: str
    layers: list[str]  # resolved, canonical layer/hook names, one per stored layer
    d_model: int
    tokens_per_example: int
    token_kinds: list[str]  # per position: "cls" | "patch" | "register" | "token"
    extra: dict[str, Any] = field(default_factory=dict)  # patch grid, context size, weights hash, ...


@dataclass
class ActivationBatch:
    """Activations of a run of consecutive examples, in dataset order."""

    acts: torch.Tensor  # (batch, n_layers, tokens_per_example, d_model)
    example_ids: np.ndarray  # (batch,) int64: Example.id of each row
    token_ids: np.ndarray | None = None  # (batch, tokens) int32, text only
    valid: np.ndarray | None = None  # (batch, tokens) bool: False for padding / BOS / special tokens
    positions: np.ndarray | None = None  # (batch, tokens) int32: position in the source example


class ModelAdapter(ABC):
    """Wraps one model. Construct with an :class:`AdapterRequest`; heavy imports happen here."""

    name: ClassVar[str]
    modality: ClassVar[str]  # which datasets it consumes: "image" | "text"

    def __init__(self, request: AdapterRequest) -> None:
        self.request = request

    @abstractmethod
    def spec(self) -> ActivationSpec:
        """Describe the activations (valid before any forward pass)."""

    def hook_names(self) -> list[str]:
        """Optional: the layer/hook names this model offers (``sae hooks``), each usable as
        ``--hook NAME``. Called on an adapter built with ``layers=[]``, so adapters that list
        hooks must accept an empty layer list (and refuse it only in :meth:`spec`/caching)."""
        from sae_core.errors import SAEError

        raise SAEError(f"adapter {self.name!r} cannot list its hooks; see its documentation (`sae plugins --all`)")

    @abstractmethod
    def iter_batches(
        self, dataset: Dataset, *, start: int = 0, batch_size: int = 64, num_workers: int = 0
    ) -> Iterator[ActivationBatch]:
        """Activations for ``dataset[start:]`` in order. Must be deterministic: the writer's
        resume relies on example ``i`` always producing the same row."""
