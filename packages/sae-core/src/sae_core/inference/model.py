"""A model loaded through its adapter, run with SAEs attached at their layers.

    from sae_core.inference import Ablate, HookedModel, SAEHook, Steer
    model, sae = HookedModel.from_checkpoint("runs/demo/run/topk-k16")
    result = model.run(["The quick brown fox."], [SAEHook(sae)])          # record
    values, ids = result.features[sae.cfg.name].top(5)                  # per token
    spliced = model.run(texts, [SAEHook(sae, splice=True)])               # reconstruction in
    ablated = model.run(texts, [SAEHook(sae, edits=[Ablate([3, 7])])])     # exact edit
    model.generate("Once upon", [SAEHook(sae, edits=[Steer(12, 8.0)])])   # causal LMs

Inputs are prepared by the adapter exactly as ``sae cache`` prepared them (same windows,
special tokens and ``valid`` rule), so an SAE reads the kind of tokens it was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae_core.checkpoint.directory import load_sae
from sae_core.errors import SAEError
from sae_core.inference import loading  # module attribute: tests count model loads by patching it
from sae_core.inference.hook import SAEHook, collect, layer_hook
from sae_core.inference.opening import can_run_hooks, open_checkpoint
from sae_core.inference.records import FeatureActs
from sae_core.plugin_calls import check_inputs, guarded, returned
from sae_core.protocols.running import Generation, ModelInputs, ModelOutput

if TYPE_CHECKING:
    from sae_core.checkpoint.sae import SAE
    from sae_core.protocols.adapter import ModelAdapter
    from sae_core.protocols.running import Generation, LayerHook, ModelInputs, ModelOutput


@dataclass
class RunResult:
    """One run: the model's output, the inputs it ran on, and each recording hook's features."""

    inputs: ModelInputs
    output: ModelOutput
    features: dict[str, FeatureActs] = field(default_factory=dict)


class HookedModel:
    """Wraps a :class:`~sae_core.protocols.ModelAdapter` that implements ``run_with_hooks``."""

    def __init__(self, adapter: ModelAdapter) -> None:
        if not can_run_hooks(type(adapter)):
            raise SAEError(f"adapter {adapter.name!r} cannot run its model with SAEs attached (it does not "
                           "implement run_with_hooks); use hf, tlens, clip or timm, or add it to the plugin")
        self.adapter = adapter

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, *, device: str = "cpu", data: str | Path | None = None
    ) -> tuple[HookedModel, SAE]:
        """The model an SAE was trained on (re-created from its cache's metadata) and the SAE.

        ``data``: the cache to take the model from, if not the one the checkpoint records."""
        found = open_checkpoint(checkpoint, data=data, device=device)
        model = cls(loading.adapter_for_cache(found.meta, device))
        return model, found.sae if found.sae is not None else load_sae(found.checkpoint, device=device)

    @property
    def modality(self) -> str:
        return self.adapter.modality

    def inputs(self, examples: Sequence[Any]) -> ModelInputs:
        """Model inputs for raw examples (texts for text models, PIL images for image models)."""

        what = "texts" if self.modality == "text" else "PIL images" if self.modality == "image" else "raw examples"
        with guarded("adapter", self.adapter.name, "make_inputs", f"ModelInputs for a list of {what}"):
            inputs = self.adapter.make_inputs(list(examples))
        return check_inputs(inputs, "adapter", self.adapter.name, "make_inputs")

    def cached_inputs(self, index: Any, dataset: Any = None) -> ModelInputs:
        """Model inputs for cache rows (``index``: their ``INDEX_DTYPE`` records, (rows, tokens))."""

        with guarded("adapter", self.adapter.name, "cached_inputs", "ModelInputs for the cache rows `index`"):
            inputs = self.adapter.cached_inputs(index, dataset)
        return check_inputs(inputs, "adapter", self.adapter.name, "cached_inputs")

    def hooks(self, saes: Sequence[SAEHook], kinds: Sequence[str], records: dict[str, list[Any]]) -> dict[str, LayerHook]:
        """Adapter callbacks for ``saes``, one per layer (SAEs at one layer apply in order)."""
        names = [h.name for h in saes]
        if len(set(names)) != len(names):
            raise SAEError(f"two SAE hooks share the name(s) {sorted({n for n in names if names.count(n) > 1})}; "
                           "pass SAEHook(..., name=...) to tell them apart")
        by_layer: dict[str, list[SAEHook]] = {}
        for h in saes:
            by_layer.setdefault(str(h.layer), []).append(h)
        return {layer: layer_hook(hs, kinds, records) for layer, hs in by_layer.items()}

    def run(
        self, inputs: ModelInputs | Sequence[Any], saes: SAEHook | Sequence[SAEHook] = (), *, output: bool = True
    ) -> RunResult:
        """Run the model with ``saes`` attached. ``inputs``: prepared :class:`ModelInputs` or raw
        examples. ``output=False`` skips the model's output (record only: it may stop early)."""

        saes = [saes] if isinstance(saes, SAEHook) else list(saes)
        prepared = inputs if isinstance(inputs, ModelInputs) else self.inputs(inputs)
        records: dict[str, list[Any]] = {}
        out = self.run_hooks(prepared, self.hooks(saes, prepared.kinds, records), output=output)
        return RunResult(prepared, out, collect(records, saes))

    def run_hooks(self, inputs: ModelInputs, hooks: Mapping[str, LayerHook], *, output: bool = True) -> ModelOutput:
        """The adapter's ``run_with_hooks`` with raw layer callbacks (metrics, tests)."""

        expected = "ModelOutput(kind='lm', logits=...) or ModelOutput(kind='embedding', embedding=...)"
        with guarded("adapter", self.adapter.name, "run_with_hooks", expected):
            out = self.adapter.run_with_hooks(inputs, hooks, output=output)
        if out is None and not output:
            return ModelOutput()  # only the hooks were wanted
        return returned(out, ModelOutput, "adapter", self.adapter.name, "run_with_hooks", expected)

    def generate(self, prompt: str, saes: SAEHook | Sequence[SAEHook] = (), *, max_new_tokens: int = 20) -> Generation:
        """Greedy continuation of ``prompt`` with ``saes`` attached at every step (causal LMs)."""
        saes = [saes] if isinstance(saes, SAEHook) else list(saes)
        saes = [dataclasses.replace(h, record=False) for h in saes]  # nothing to record while generating

        hooks = self.hooks(saes, ["token"], {})
        with guarded("adapter", self.adapter.name, "generate", "a Generation"):
            out = self.adapter.generate(prompt, hooks, max_new_tokens=max_new_tokens)
        return returned(out, Generation, "adapter", self.adapter.name, "generate", "a Generation(text, token_ids, ...)")
