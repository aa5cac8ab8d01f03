"""``downstream``: what splicing the SAE into the model does to the model's output.

The model is re-created from the cache metadata through its adapter plugin (``AdapterRequest``
with the cache's ``model``, ``layers`` and the ``checkpoint``, ``context_size`` and ``options`` the
adapter recorded in ``extra``), and run on held-out rows (``--option split=``, see
:func:`sae_core.analyses.common.analysis_rows`: the SAE's validation examples by default, the last
``heldout_frac`` of the cache for SAEs trained without a validation split): the last of those
rows, as many as hold ``downstream_tokens`` (8192) tokens the SAE reads, at most
``downstream_rows`` (512). At the SAE's layer, on the tokens it was trained on (valid
tokens of its token kind), the activations are replaced by the SAE's reconstruction, or by zeros
for the baseline, and the model runs on:

- causal LMs: next-token cross-entropy clean / spliced / zero-ablated,
  ``ce_loss_recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean)``, and the KL divergence
  of the next-token distributions (clean ‖ spliced, clean ‖ zero-ablated);
- encoders (BERT-style sentence encoders, ViTs): cosine between the final embedding with and
  without the splice (and with zero ablation); CLIP also zero-shot-style logits.

Every number has a standard error over rows (``*_se``). The activations the live model produces
at the layer are checked against the cache (``cache_rel_error``): a large value means the
re-created model is not the one that was cached.

Transcoders: the spliced layer is the transcoder's *output* layer, whose activations (at the same
tokens) are replaced by the transcoder's prediction from its *input* layer in the same forward
(``replace`` receives the input layer's activations; the cache check compares those). The
zero-ablated baseline zeroes the output layer. This needs an adapter that can read one layer and
replace another in one forward (``ModelAdapter.splice_sources``: the ``hf`` and ``tlens``
adapters' ``splice_eval(source=...)``) and an input layer that runs before the output layer;
otherwise ``downstream.json`` records a skip with the reason. (Transcoders go through
``splice_eval`` only, so their results have no KL or standard errors yet.)

Adapters opt in by implementing ``run_with_hooks`` and ``cached_inputs``
(:class:`~sae_core.protocols.ModelAdapter`, types in :mod:`sae_core.protocols.running`; the
metrics are computed here, :mod:`sae_core.inference.splice_eval`); plugins that implement only
the older ``ModelAdapter.splice_eval(index, mask, layer, replace, *, dataset=None, batch_rows=8)
-> dict`` still work. When the adapter plugin is not installed, implements neither, or the model
or dataset cannot be re-created here, ``downstream.json`` records ``skipped`` with the reason
instead of failing the other analyses. Writes ``downstream.json``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from sae_core import (
    Analysis,
    AnalysisContext,
    ModelAdapter,
    SAEError,
    UnknownComponentError,
    filenames,
    last_rows_with,
    open_dataset,
    rows_span,
    shared_adapter,
    splice_metrics,
)
from sae_core.analyses.common import (
    heldout_rows,
    layer_and_positions,
    option,
    read_rows,
    sae_split,
    save_json,
    target_layer,
)

MISMATCH = 0.05  # cache_rel_error above this: the re-created model does not reproduce the cache


_CANNOT = "adapter {!r} cannot run its model with SAEs attached (it implements neither run_with_hooks nor splice_eval)"
_NO_SOURCES = ("adapter {!r} cannot splice a transcoder (replace one layer by a function of another in one forward: "
               "ModelAdapter.splice_sources)")


def _side(ctx: AnalysisContext) -> str:
    """Which rows were read: ``--option split=``, default val (tail for SAEs without a split)."""
    return str(ctx.options.get("split", "val" if sae_split(ctx) is not None else "tail"))


class Downstream(Analysis):
    """Model output with the SAE spliced in: LM CE loss recovered, or embedding cosine."""

    name: ClassVar[str] = "downstream"
    options: ClassVar[tuple[str, ...]] = ("downstream_tokens", "downstream_rows", "downstream_batch", "split",
                                          "heldout_frac")

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        n_tokens = option(ctx, "downstream_tokens", 8192, int, "positive")
        n_rows = option(ctx, "downstream_rows", 512, int, "positive")
        batch_rows = option(ctx, "downstream_batch", 8, int, "positive")
        meta = ctx.reader.meta
        li, positions = layer_and_positions(ctx)
        lo = target_layer(ctx)  # transcoders: the layer spliced is the one they predict
        layer = meta.layers[li if lo is None else lo]
        tokens = ctx.sae.cfg.source.tokens
        head = {"adapter": meta.adapter, "model": meta.model, "layer": layer, "tokens": tokens}
        source_kw: dict[str, Any] = {}
        if lo is not None:
            head["source"] = source_kw["source"] = meta.layers[li]
        component, why = _component(meta.adapter, transcoder=lo is not None)
        if why is not None:
            return self._skip(ctx, head, why)
        rows, acts, index, mask = _spliced_rows(ctx, li, positions, tokens, n_tokens=n_tokens, n_rows=n_rows)
        adapter, dataset, why = self._model(component, meta, ctx.device, transcoder=lo is not None)
        if why is not None:
            return self._skip(ctx, head, why)

        if lo is None and _runs_with_hooks(type(adapter)):

            result = splice_metrics(adapter, ctx.sae, layer, index, acts[:, 0], kinds=list(meta.token_kinds),
                                    tokens=tokens, dataset=dataset, batch_rows=batch_rows)
        else:
            try:
                result = self._legacy(adapter, ctx, index, mask, layer, acts, dataset, batch_rows, source_kw)
            except SAEError as e:
                if lo is None:
                    raise
                # e.g. the input hook runs after the output hook (a post-LN model's ln2): nothing to splice
                return self._skip(ctx, head, f"cannot splice this transcoder into the model: {e}")
        return _record(ctx, head, rows, mask, result)

    def _model(self, component: Any, meta: Any, device: str, *, transcoder: bool) -> tuple[Any, Any, str | None]:
        """(adapter, dataset, None): the live model (one for every analysis of the run) and, for
        non-text models, the dataset their inputs come from; or (None, None, why) when it cannot
        splice this SAE or cannot be re-created here (a skip, not a failure of the other analyses)."""
        try:
            adapter = self._adapter(component, meta, device)
            if _cannot_run(type(adapter), transcoder=transcoder):
                return None, None, _CANNOT.format(meta.adapter)
            if transcoder and not getattr(adapter, "splice_sources", False):
                return None, None, _NO_SOURCES.format(meta.adapter)
            dataset = None
            if adapter.modality != "text":  # text adapters read the tokens from the index

                dataset = open_dataset(meta.dataset["spec"], adapter.modality, **meta.dataset.get("options", {}))
        except (SAEError, OSError) as e:
            return None, None, f"cannot re-create the model or dataset of the cache here: {e}"
        return adapter, dataset, None

    def _legacy(self, adapter: Any, ctx: AnalysisContext, index: np.ndarray, mask: np.ndarray, layer: str,
                acts: torch.Tensor, dataset: Any, batch_rows: int, source_kw: dict[str, Any]) -> dict[str, Any]:
        """The adapter's own ``splice_eval`` (the protocol before ``run_with_hooks``; transcoders
        with ``source=``)."""
        cached = acts[:, 0][torch.from_numpy(mask)]  # (M, d): the tokens splice_eval hands to replace, in order
        # (acts are of the SAE's input layer: a transcoder's replace receives its input layer's tokens)
        check = {"at": 0, "err": 0.0, "ref": 0.0}
        sae = ctx.sae

        def replace(x: torch.Tensor) -> torch.Tensor:
            ref = cached[check["at"] : check["at"] + len(x)].to(x.device)
            if len(ref) == len(x):
                check["err"] += float(((x.float() - ref) ** 2).sum())
                check["ref"] += float((ref**2).sum())
            check["at"] += len(x)
            with torch.no_grad():
                return sae(x.float())

        result = adapter.splice_eval(index, mask, layer, replace, dataset=dataset, batch_rows=batch_rows, **source_kw)
        rel = (check["err"] / max(check["ref"], 1e-30)) ** 0.5 if check["at"] == len(cached) else None
        return {**result, "cache_rel_error": rel}

    def _adapter(self, component: Any, meta: Any, device: str) -> Any:

        return shared_adapter(component, meta, device)  # one model for every analysis of the run

    def _skip(self, ctx: AnalysisContext, head: dict[str, Any], why: str) -> dict[str, Any]:
        result = {**head, "skipped": why}
        save_json(ctx.checkpoint / filenames.DOWNSTREAM_FILE, result)
        return result


def _component(name: str, *, transcoder: bool) -> tuple[Any, str | None]:
    """(the adapter plugin that made the cache, None), or (None, why) when it is not installed
    or its class shows it cannot splice this SAE: known without building the model."""
    from sae_core import get_component  # lazy: loads pluggy

    try:
        component = get_component("adapter", name)
    except UnknownComponentError as e:
        return None, f"the adapter plugin that made the cache is not installed: {e}"
    if _cannot_run(component.factory, transcoder=transcoder):
        return None, _CANNOT.format(name)
    if transcoder and _lacks_sources(component.factory):
        return None, _NO_SOURCES.format(name)
    return component, None


def _spliced_rows(ctx: AnalysisContext, li: int, positions: np.ndarray, tokens: str, *, n_tokens: int, n_rows: int
                  ) -> tuple[np.ndarray, torch.Tensor, np.ndarray, np.ndarray]:
    """(rows, acts (n, 1, T, d) of the SAE's input layer, index (n, T), mask (n, T) of the tokens
    spliced): the last held-out rows holding ``n_tokens`` tokens of the SAE's kind (at most
    ``n_rows``); none at all is an error (nothing to measure)."""
    allowed = np.zeros(ctx.reader.meta.tokens_per_example, dtype=bool)  # (T,) positions of the SAE's kind
    allowed[positions] = True
    rows = last_rows_with(ctx.reader, heldout_rows(ctx), lambda ix: (ix["valid"].astype(bool) & allowed).sum(1),
                          tokens=n_tokens, max_rows=n_rows)
    acts, index = read_rows(ctx, rows, li)
    mask = index["valid"].astype(bool) & allowed[None, :]
    if not mask.any():
        raise SAEError(f"no held-out tokens of kind {tokens!r} in {len(rows)} rows of {ctx.reader.path}; cache more data")
    return rows, acts, index, mask


def _record(ctx: AnalysisContext, head: dict[str, Any], rows: np.ndarray, mask: np.ndarray, result: dict[str, Any]
            ) -> dict[str, Any]:
    """Write ``downstream.json``: the rows measured, the metrics (unmovable ones flagged) and the
    cache check, with a warning when the re-created model is not the one that was cached."""
    rel = result.pop("cache_rel_error", None)
    result = flag_unmovable(result)
    result = {**head, "split": _side(ctx), "rows": rows_span(rows), "n_rows": len(rows),
              "n_tokens": int(mask.sum()), "n_spliced_tokens": int(mask.sum()), **result, "cache_rel_error": rel}
    if rel is not None and rel > MISMATCH:
        result["warning"] = (f"the re-created model's activations differ from the cache by {rel:.1%}: "
                             "it is not the model that was cached, so these numbers do not describe it")
    save_json(ctx.checkpoint / filenames.DOWNSTREAM_FILE, result)
    return result


#: relative change below which zeroing the spliced positions "changes nothing" (float noise)
UNMOVED = 1e-6


def flag_unmovable(result: dict[str, Any]) -> dict[str, Any]:
    """Mark a metric that cannot move: when zero-ablating the spliced positions leaves the model's
    output unchanged (e.g. patch tokens at a ViT's last block, which its CLS-pooled embedding
    never reads), a spliced cosine of 1.0000 or a CE delta of 0 says nothing about the SAE.
    The headline numbers become null and ``not_measurable`` says why; the raw values stay
    under ``unmovable_raw``."""
    if result.get("kind") == "embedding_cosine":
        zero, keys = result.get("embedding_cosine_zero_ablated"), ["embedding_cosine", "embedding_cosine_zero_ablated"]
        unmoved = zero is not None and abs(1.0 - float(zero)) < UNMOVED
    elif result.get("kind") == "lm_ce":
        clean, zero = result.get("ce_clean"), result.get("ce_zero_ablated")
        keys = ["ce_spliced", "ce_zero_ablated", "ce_loss_recovered", "ce_delta", "kl_spliced", "kl_zero_ablated"]
        unmoved = (clean is not None and zero is not None and abs(float(zero) - float(clean)) <= UNMOVED * abs(float(clean))
                   and float(result.get("kl_zero_ablated") or 0.0) < UNMOVED)
    else:
        return result
    if not unmoved:
        return result
    out = dict(result)
    out["unmovable_raw"] = {k: out.get(k) for k in keys}
    for k in keys:
        if k in out:
            out[k] = None
            out.pop(f"{k}_se", None)
    out["not_measurable"] = ("zeroing the spliced positions does not change the model's output (the output does not "
                             "read these positions at this layer), so no splice can move this metric; measure at an "
                             "earlier layer or on the tokens the output reads")
    return out


def _lacks_sources(factory: Any) -> bool:
    """Whether an adapter class is known not to splice transcoders (see ``splice_sources``)."""

    return isinstance(factory, type) and issubclass(factory, ModelAdapter) and not factory.splice_sources


def _runs_with_hooks(cls: type) -> bool:
    """Whether adapter class ``cls`` implements ``run_with_hooks`` (the current protocol)."""

    if issubclass(cls, ModelAdapter):
        return cls.supports("run_with_hooks")
    return callable(getattr(cls, "run_with_hooks", None))


def _cannot_run(factory: Any, *, transcoder: bool = False) -> bool:
    """Whether an adapter class can run its model with an SAE spliced in by neither
    ``run_with_hooks`` nor the older ``splice_eval`` (transcoders: not by ``splice_eval``;
    False for a factory that is not a class: unknown until built)."""

    if not isinstance(factory, type):
        return False
    methods = ("splice_eval",) if transcoder else ("run_with_hooks", "splice_eval")
    if issubclass(factory, ModelAdapter):
        return not any(factory.supports(m) for m in methods)
    return not any(callable(getattr(factory, m, None)) for m in methods)
