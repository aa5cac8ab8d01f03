"""Model adapters: turn dataset examples into activations of chosen layers/hooks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sae_core.errors import SAEError
from sae_core.protocols.store import INDEX_DTYPE

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
    #: JSON-able; becomes the cache metadata's ``extra`` (part of its fingerprint). Keys read by sae:
    #: ``checkpoint``, ``context_size``, ``options`` (re-creating the model for ``downstream``),
    #: ``example_unit`` (progress bar unit), and for images ImageGeometry.to_extra()'s keys.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActivationBatch:
    """Activations of a run of consecutive examples, in dataset order."""

    acts: torch.Tensor  # (batch, n_layers, tokens_per_example, d_model)
    example_ids: np.ndarray  # (batch,) int64: Example.id of each row
    token_ids: np.ndarray | None = None  # (batch, tokens) int32, text only
    valid: np.ndarray | None = None  # (batch, tokens) bool: False for padding / BOS / special tokens
    positions: np.ndarray | None = None  # (batch, tokens) int32: position in the source example

    def index_records(self) -> np.ndarray:
        """The batch's ``INDEX_DTYPE`` records (batch, tokens), as every store writes them: example
        id per row, position (default: 0..T-1), token id (default -1), valid (default True)."""

        n, t = int(self.acts.shape[0]), int(self.acts.shape[2])
        ids = np.asarray(self.example_ids, dtype=np.int64).reshape(-1)
        index = np.zeros((n, t), dtype=INDEX_DTYPE)
        index["example"] = ids[:, None]
        index["position"] = np.arange(t, dtype=np.int32) if self.positions is None else self.positions
        index["token"] = -1 if self.token_ids is None else self.token_ids
        index["valid"] = 1 if self.valid is None else np.asarray(self.valid, dtype=np.uint8)
        return index


@dataclass
class Unembedding:
    """How a language model reads next-token logits off its final residual stream, as a linear
    map: logits = norm(h) @ W_U (+ a bias that does not depend on h). ``norm`` is the final norm
    applied to h first: ``"layernorm"`` (centres h, divides by its std, scales by ``norm_weight``),
    ``"rmsnorm"`` (divides by its RMS, scales by ``norm_weight``) or ``"none"``. ``norm_weight``
    is None when the scale is already folded into ``W_U`` (a TransformerLens model loaded with
    ``fold_ln``). The ``logit-effects`` analysis turns this into the direction -> logits map that
    SAEDashboard uses (:func:`sae_core.analyses.logit_effects.folded_unembedding`)."""

    W_U: torch.Tensor  # (d_model, d_vocab)
    norm: str = "none"  # "layernorm" | "rmsnorm" | "none"
    norm_weight: torch.Tensor | None = None  # (d_model,) the final norm's elementwise scale, if not in W_U
    source: str = ""  # where it was read from, e.g. "lm_head.weight, transformer.ln_f (LayerNorm)"


class ModelAdapter(ABC):
    """Wraps one model. Construct with an :class:`AdapterRequest`; heavy imports happen here.

    Required: :meth:`spec` and :meth:`iter_batches`. Optional, with defaults: :meth:`write_extras`
    (files for the viewer); :meth:`spliced_forward` (end-to-end training); running the model with
    SAEs attached — :meth:`run_with_hooks`, :meth:`cached_inputs`, :meth:`make_inputs`,
    :meth:`generate` (``sae_core.inference``, ``sae features|steer|ablate``, the ``downstream``
    analysis); :meth:`unembedding` (the ``logit-effects`` analysis) — and the older :meth:`splice_eval` (``downstream``
    only; still the route for
    transcoders, see ``splice_sources``); callers ask :meth:`supports` whether an optional method
    is implemented. Image adapters describe their patch grid with
    :class:`~sae_core.protocols.geometry.ImageGeometry` in ``spec().extra``.
    """

    name: ClassVar[str]
    modality: ClassVar[str]  # which datasets it consumes: "image" | "text"
    #: :meth:`splice_eval` accepts ``source=NAME`` (splicing a transcoder; see there)
    splice_sources: ClassVar[bool] = False

    def __init__(self, request: AdapterRequest) -> None:
        self.request = request

    @abstractmethod
    def spec(self) -> ActivationSpec:
        """Describe the activations (valid before any forward pass)."""

    def hook_names(self) -> list[str]:
        """Optional: the layer/hook names this model offers (``sae hooks``), each usable as
        ``--hook NAME``. Called on an adapter built with ``layers=[]``, so adapters that list
        hooks must accept an empty layer list (and refuse it only in :meth:`spec`/caching)."""

        raise SAEError(f"adapter {self.name!r} cannot list its hooks; see its documentation (`sae plugins --all`)")

    @abstractmethod
    def iter_batches(
        self, dataset: Dataset, *, start: int = 0, batch_size: int = 64, num_workers: int = 0
    ) -> Iterator[ActivationBatch]:
        """Activations for ``dataset[start:]`` in order. Must be deterministic: the writer's
        resume relies on example ``i`` always producing the same row."""

    # -- optional ---------------------------------------------------------------------------------
    @classmethod
    def supports(cls, method: str) -> bool:
        """Whether this adapter implements the optional method ``method`` (e.g.
        ``"run_with_hooks"``) rather than inheriting the default; known without building the model."""
        return getattr(cls, method, None) is not getattr(ModelAdapter, method, None)

    def write_extras(self, path: Path) -> None:  # noqa: B027 (optional: empty default)
        """Write files the viewer needs into the cache directory ``path`` (e.g. a text adapter's
        ``vocab.json``), before the first batch is cached. Use ``sae_core.atomic_write_*``.
        Default: nothing."""

    # -- running the model with hooks (optional) --------------------------------------------------
    # Used by sae_core.inference (record / splice / edit SAE features), `sae features|steer|ablate`,
    # the viewer's "Your input" page and the `downstream` analysis; the types are in
    # sae_core.protocols.running. An adapter opts in by implementing run_with_hooks and
    # cached_inputs (make_inputs for raw inputs, generate for causal LMs); the SAE math and the
    # metrics live in sae-core. The defaults raise a one-line SAEError naming what is missing.
    def make_inputs(self, examples: Sequence[Any]) -> ModelInputs:
        """Model inputs for raw examples (texts, images), prepared exactly as caching prepares
        them (same windows, specials and ``valid`` rule), so SAEs read what they were trained on.
        Used by ``sae features|steer`` and the viewer's "Your input" page."""
        raise _cannot(self, "make_inputs")

    def cached_inputs(self, index: np.ndarray, dataset: Dataset | None = None) -> ModelInputs:
        """Model inputs for cache rows: ``index`` is their ``INDEX_DTYPE`` records (n, T); text
        adapters read the tokens from ``index["token"]``, others the examples
        ``dataset[index["example"][i, 0]]``. Used by ``sae ablate`` and ``downstream``."""
        raise _cannot(self, "cached_inputs")

    def run_with_hooks(
        self, inputs: ModelInputs, hooks: Mapping[str, LayerHook], *, output: bool = True
    ) -> ModelOutput:
        """Run the model on ``inputs`` with ``hooks[layer](acts, valid)`` called on each named
        layer's output (batch first, ``(batch, tokens, d_model)``; ``layer`` a canonical name of
        ``spec().layers``) and its return value, if not None, used instead. Return the model's
        output (:class:`~sae_core.protocols.running.ModelOutput`: next-token logits for causal LMs,
        a final embedding otherwise). ``output=False``: only the hooks matter (the adapter may stop
        after the last hooked layer and return ``ModelOutput()``)."""
        raise _cannot(self, "run_with_hooks")

    def generate(
        self, prompt: str, hooks: Mapping[str, LayerHook], *, max_new_tokens: int = 20
    ) -> Generation:
        """Greedy (deterministic) continuation of ``prompt`` with ``hooks`` on at every step
        (causal language models only; ``sae steer``)."""
        raise _cannot(self, "generate")

    def unembedding(self) -> Unembedding:
        """Optional: the model's unembedding (:class:`Unembedding`: ``W_U`` (d_model, d_vocab) and
        its final norm), for language models that predict tokens. Raise :class:`SAEError` with the
        reason where the loaded model has none (an encoder without an LM head, an LM head that is
        not linear after the final norm). Used by the ``logit-effects`` analysis, which records the
        reason as a skip; adapters that do not implement it (ViTs) are skipped without loading."""

        raise SAEError(f"adapter {self.name!r} has no unembedding (it does not implement ModelAdapter.unembedding)")

    @classmethod
    def can_run(cls) -> bool:
        """Whether this adapter can run its model with SAEs attached (implements
        :meth:`run_with_hooks`)."""
        return cls.supports("run_with_hooks")

    def splice_eval(
        self,
        index: np.ndarray,
        mask: np.ndarray,
        layer: str,
        replace: Callable[[torch.Tensor], torch.Tensor],
        *,
        dataset: Dataset | None = None,
        batch_rows: int = 8,
    ) -> dict[str, Any]:
        """The ``downstream`` analysis's older entry point, for adapters that do not implement
        :meth:`run_with_hooks` (which is preferred: with it sae-core computes CE, KL, cosines and
        their standard errors itself, and ``sae features|steer|ablate`` work too).

        Run the model on cached rows with an SAE spliced in. ``index``: the cache's
        ``INDEX_DTYPE`` records (n, T) of the rows; ``mask`` (n, T) bool: the positions to
        replace; ``layer``: a canonical layer name of ``spec()``. Run the model on those rows
        (text: tokens from ``index["token"]``; other modalities: ``dataset[index["example"][i, 0]]``)
        with the layer's activations at ``mask`` replaced by ``replace(acts[mask])`` — call it once
        per chunk of rows, in row order — and return JSON-able metrics: ``kind`` plus numbers
        (``lm_ce`` with ``ce_loss_recovered`` etc., or ``embedding_cosine``; see
        docs/analyses.md). The analysis re-creates the adapter from the cache's metadata:
        ``AdapterRequest(model=spec.model, layers=spec.layers, checkpoint=extra["checkpoint"],
        context_size=extra["context_size"], options=extra["options"])``. Default: not implemented
        (``downstream`` records a skip).

        Transcoders: an adapter that sets ``splice_sources = True`` also accepts a keyword
        ``source`` (a canonical layer name of ``spec()``, or None): then ``replace`` receives
        the activations of layer ``source`` at ``mask``, taken from the same forward before
        ``layer`` runs, and its result replaces ``layer``'s activations at ``mask`` (the
        zero-ablated baseline still zeroes ``layer``). Raise :class:`SAEError` if ``source``
        does not run before ``layer``. (``downstream`` splices transcoders only this way.)"""
        raise NotImplementedError(f"adapter {self.name!r} does not implement splice_eval")

    def spliced_forward(
        self,
        index: np.ndarray,
        mask: np.ndarray,
        layer: str,
        replace: Callable[[torch.Tensor], torch.Tensor] | None,
        *,
        output: str = "logits",
    ) -> torch.Tensor:
        """A differentiable forward for end-to-end training (``sae train --e2e``).

        Run the model on the rows ``index`` (``INDEX_DTYPE`` records (b, T), as the adapter's
        batches give them: text tokens from ``index["token"]``) with gradients enabled, layer
        ``layer``'s activations at ``mask`` (b, T) replaced by ``replace(acts[mask])`` (None: the
        clean model; ``replace`` is called once, with the rows in order), and return
        ``output``: ``"logits"`` (b, T, vocab) of a causal LM, or ``"hidden"`` (b, T, d), the
        final hidden states. The model's own weights must not need gradients (the caller
        freezes them). Default: not implemented."""
        raise NotImplementedError(f"adapter {self.name!r} does not implement spliced_forward")


def _cannot(adapter: ModelAdapter, method: str) -> Exception:

    return SAEError(f"adapter {adapter.name!r} cannot run its model with SAEs attached (it does not implement "
                    f"{method}); use an adapter that does (hf, tlens, clip, timm) or add it to the plugin")
