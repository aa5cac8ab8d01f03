"""Model adapters: turn dataset examples into activations of chosen layers/hooks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from sae_core.protocols.dataset import Dataset
    from sae_core.protocols.running import Generation, LayerHook, ModelInputs, ModelOutput


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

    @abstractmethod
    def iter_batches(
        self, dataset: Dataset, *, start: int = 0, batch_size: int = 64, num_workers: int = 0
    ) -> Iterator[ActivationBatch]:
        """Activations for ``dataset[start:]`` in order. Must be deterministic: the writer's
        resume relies on example ``i`` always producing the same row."""

    # -- running the model with hooks (optional) --------------------------------------------------
    # Used by sae_core.inference (record / splice / edit SAE features), `sae features|steer|ablate`
    # and the `downstream` analysis; types in sae_core.protocols.running. The defaults say the
    # adapter cannot, as one line naming what is missing.
    def make_inputs(self, examples: Sequence[Any]) -> ModelInputs:
        """Model inputs for raw examples (texts, images), prepared exactly as caching does
        (same windows, specials and ``valid`` rule), so SAEs read what they were trained on."""
        raise _cannot(self, "make_inputs")

    def cached_inputs(self, index: np.ndarray, dataset: Dataset | None = None) -> ModelInputs:
        """Model inputs for cache rows (``index``: their index records (n, T)); text adapters
        read the tokens from the index, others the examples from ``dataset``."""
        raise _cannot(self, "cached_inputs")

    def run_with_hooks(
        self, inputs: ModelInputs, hooks: Mapping[str, LayerHook], *, output: bool = True
    ) -> ModelOutput:
        """Run the model on ``inputs`` with ``hooks[layer](acts, valid)`` called on each named
        layer's output (batch first) and its return value, if not None, used instead.
        ``output=False``: only the hooks matter (the adapter may stop after the last one)."""
        raise _cannot(self, "run_with_hooks")

    def generate(
        self, prompt: str, hooks: Mapping[str, LayerHook], *, max_new_tokens: int = 20
    ) -> Generation:
        """Greedy (deterministic) continuation of ``prompt`` with ``hooks`` on at every step
        (causal language models only)."""
        raise _cannot(self, "generate")

    @classmethod
    def can_run(cls) -> bool:
        """Whether this adapter implements :meth:`run_with_hooks`."""
        return cls.run_with_hooks is not ModelAdapter.run_with_hooks


def _cannot(adapter: ModelAdapter, method: str) -> Exception:
    from sae_core.errors import SAEError

    return SAEError(f"adapter {adapter.name!r} cannot run its model with SAEs attached (it does not implement "
                    f"{method}); use an adapter that does (tlens, clip, timm) or add it to the plugin")
