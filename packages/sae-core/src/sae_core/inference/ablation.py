"""The ablation study: what removing chosen features does to the model's output on held-out data.

For a feature set F, on held-out rows (:mod:`sae_core.inference.heldout`: the SAE's validation
examples, or the last 10% of the cache for SAEs trained without a validation split; the last of
them, as many as hold ``tokens`` tokens the SAE reads), at the SAE's layer and on the tokens it
reads, the model runs:

- *spliced*: x ← x̂, the SAE's reconstruction (the baseline of an SAE-internal ablation);
- *ablated*: x ← x̂ with f_i = 0 for i ∈ F (the SAELens-fork guide's ablation study);
- *ablated exact*: x ← x − Σ_{i∈F} f_i W_dec[i], the error term kept, so only F is removed from
  the real activations (compared with the clean model).

Causal LMs report next-token CE (and KL from clean), encoders and ViTs the cosine of the final
embedding with the clean one; every number has a standard error over rows, and each feature's
firing rate on the evaluated tokens says how often it had anything to remove. Results are merged
into ``ablation.json`` beside the checkpoint (keyed by the feature set), which the viewer shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sae_core.checkpoint.filenames import ABLATION_FILE
from sae_core.datasets import open_dataset
from sae_core.errors import SAEError
from sae_core.firing_rule import firing
from sae_core.inference.compare import compare
from sae_core.inference.edits import Ablate
from sae_core.inference.heldout import (
    DEFAULT_FRAC,
    default_side,
    last_rows_with,
    read_index,
    rows_span,
    sae_split,
    select_rows,
)
from sae_core.inference.hook import SAEHook, check_changes_allowed, layer_hook
from sae_core.io import atomic_write_json

if TYPE_CHECKING:
    from sae_core.inference.target import SAETarget
    from sae_core.protocols.running import LayerHook, ModelInputs

FILE = ABLATION_FILE


def ablation_study(
    target: SAETarget, feature_sets: list[list[int]], *, tokens: int = 8192, max_rows: int = 512, batch_rows: int = 8,
    split: str | None = None, frac: float = DEFAULT_FRAC, write: bool = True,
) -> dict[str, Any]:
    """Ablate each of ``feature_sets`` (each set together) on held-out rows; returns the
    ``ablation.json`` document of this study (and merges it into the file when ``write``).

    ``split``: which rows (:func:`~sae_core.inference.heldout.select_rows`): ``val`` (default
    for SAEs trained with a validation split), ``tail`` (the last ``frac`` of the cache; default
    otherwise) or ``all``."""
    sae, reader = target.sae, target.reader
    check_changes_allowed(sae, "the ablation study")
    for fs in feature_sets:
        Ablate(tuple(fs)).check(sae.d_sae)
    layer, kind = target.layer, target.tokens
    side, rows, index, n_tokens = _heldout(target, split, frac, tokens=tokens, max_rows=max_rows)
    model = target.model()
    dataset = _dataset(model, reader)
    feats = sorted({i for fs in feature_sets for i in fs})
    fired = torch.zeros(len(feats), dtype=torch.float64)
    variants = _variants(target, feature_sets, feats, fired)

    def batches() -> Iterator[ModelInputs]:
        for lo in range(0, len(index), batch_rows):
            yield model.cached_inputs(index[lo : lo + batch_rows], dataset)

    result = compare(model, batches(), variants, keep_embeddings=False)
    fired_frac = dict(zip(feats, (fired / n_tokens).tolist(), strict=True))
    head = {"checkpoint": target.checkpoint.name, "adapter": reader.meta.adapter, "model": reader.meta.model,
            "layer": layer, "tokens": kind, "split": side, "rows": rows_span(rows), "n_rows": len(rows),
            "n_tokens": n_tokens}
    lm = result.kind == "lm"
    entries = _entries(result, feature_sets, fired_frac, head)
    doc = {"kind": "lm_ce" if lm else "embedding_cosine", "sae": target.name, "results": entries}
    if write:
        merge(target.checkpoint / FILE, doc)
    return doc


def _heldout(target: SAETarget, split: str | None, frac: float, *, tokens: int, max_rows: int
             ) -> tuple[str, np.ndarray, np.ndarray, int]:
    """The held-out rows evaluated: (side, rows, their index records (n, T), tokens the SAE reads
    in them). Only tokens of the SAE's kind count towards ``tokens``, so that every study
    measures about as many tokens whatever the kind; none at all is an error, not a 0/0."""
    reader, kind = target.reader, target.tokens
    allowed = np.zeros(reader.meta.tokens_per_example, dtype=bool)  # (T,) positions of the SAE's kind
    allowed[reader.positions(kind)] = True
    val = sae_split(target.sae.cfg)
    side = split or default_side(val)
    candidates = select_rows(reader, val, side, frac=frac, what=f"SAE {target.checkpoint}", flag="--split")
    rows = last_rows_with(reader, candidates, lambda ix: (ix["valid"].astype(bool) & allowed).sum(1),
                          tokens=tokens, max_rows=max_rows)
    index = read_index(reader, rows)
    n_tokens = int((index["valid"].astype(bool) & allowed[None, :]).sum())
    if n_tokens == 0:
        raise SAEError(f"no held-out tokens of kind {kind!r} in {len(rows)} {side} rows of {reader.path}; cache more data")
    return side, rows, index, n_tokens


def _dataset(model: Any, reader: Any) -> Any:
    """The cache's dataset, from which non-text models take their inputs (images); None for text
    models, which read the tokens from the cache index."""
    if model.modality == "text":
        return None

    meta = reader.meta
    return open_dataset(meta.dataset["spec"], model.modality, **meta.dataset.get("options", {}))


def _variants(target: SAETarget, feature_sets: list[list[int]], feats: list[int], fired: torch.Tensor
              ) -> dict[str, Any]:
    """The runs :func:`compare` measures against the clean one: ``spliced`` (x ← x̂), and per
    feature set ``ablated[...]`` (x ← x̂ without the set) and ``exact[...]`` (the set removed from
    x, the error term kept). The spliced run also adds into ``fired`` (len(feats),) how many
    evaluated tokens each feature of ``feats`` fires on: a feature that never fires removes nothing."""
    sae, layer, kind = target.sae, target.layer, target.tokens
    kinds = list(target.reader.meta.token_kinds)

    def spliced(inputs: ModelInputs) -> dict[str, LayerHook]:
        records: dict[str, list[Any]] = {}
        inner = layer_hook([SAEHook(sae, splice=True, layer=layer, tokens=kind, name="s")], kinds, records)

        def fn(acts: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
            out = inner(acts, valid)
            f = records["s"].pop()[2]  # (M, d_sae)
            fired.add_(firing(f[:, feats]).sum(0).double().cpu())  # code != 0: signed codes fire too
            return out

        return {layer: fn}

    def edit(fs: list[int], exact: bool) -> Any:
        hook = SAEHook(sae, edits=[Ablate(tuple(fs))], splice=not exact, record=False, layer=layer, tokens=kind)
        return lambda inputs: {layer: layer_hook([hook], kinds, {})}

    variants: dict[str, Any] = {"spliced": spliced}
    for fs in feature_sets:
        key = _key(fs)
        variants[f"ablated{key}"] = edit(fs, exact=False)
        variants[f"exact{key}"] = edit(fs, exact=True)
    return variants


def _entries(result: Any, feature_sets: list[list[int]], fired_frac: dict[int, float], head: dict[str, Any]
             ) -> list[dict[str, Any]]:
    """One ``ablation.json`` result per feature set. The SAE-internal ablation is measured from
    the spliced run (its own baseline), the exact one from the clean model; causal LMs in
    next-token CE (and KL), other models in the cosine of their final embedding."""
    s = result.summary()
    lm = result.kind == "lm"
    if lm:
        base = {k: s[k] for k in ("ce_clean", "ce_clean_se", "ce_spliced", "ce_spliced_se", "n_targets")}
    else:
        base = {"embedding": result.embedding_name, "cos_spliced": s["cos_spliced"], "cos_spliced_se": s["cos_spliced_se"]}
    entries = []
    for fs in feature_sets:
        key = _key(fs)
        entry: dict[str, Any] = {"features": sorted(fs), "fired_frac": [fired_frac[i] for i in sorted(fs)], **head, **base}
        delta, delta_se = result.delta(f"ablated{key}", "spliced")
        if lm:
            exact, exact_se = result.delta(f"exact{key}", "clean")
            entry.update(ce_ablated=s[f"ce_ablated{key}"], ce_ablated_se=s[f"ce_ablated{key}_se"],
                         ce_delta=delta, ce_delta_se=delta_se,
                         ce_ablated_exact=s[f"ce_exact{key}"], ce_ablated_exact_se=s[f"ce_exact{key}_se"],
                         ce_delta_exact=exact, ce_delta_exact_se=exact_se,
                         kl_ablated_exact=s[f"kl_exact{key}"], kl_ablated_exact_se=s[f"kl_exact{key}_se"])
        else:
            entry.update(cos_ablated=s[f"cos_ablated{key}"], cos_ablated_se=s[f"cos_ablated{key}_se"],
                         cos_delta=delta, cos_delta_se=delta_se,
                         cos_ablated_exact=s[f"cos_exact{key}"], cos_ablated_exact_se=s[f"cos_exact{key}_se"])
        entries.append(entry)
    return entries


def _key(fs: list[int]) -> str:
    return "[" + ",".join(str(i) for i in sorted(fs)) + "]"


def merge(path: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """Write ``doc``'s results into ``path``, replacing earlier results for the same feature sets
    and keeping the others (each result names the rows it was measured on)."""

    old: list[dict[str, Any]] = []
    if path.is_file():
        try:
            prev = json.loads(path.read_text())
            if prev.get("kind") == doc["kind"]:
                old = [r for r in prev.get("results", []) if isinstance(r, dict) and "features" in r]
        except (ValueError, AttributeError):
            old = []  # a damaged file is replaced
    new_keys = {tuple(r["features"]) for r in doc["results"]}
    merged = {**doc, "results": [r for r in old if tuple(r["features"]) not in new_keys] + doc["results"]}
    atomic_write_json(path, merged, default=float)
    return merged


def read(checkpoint: Any) -> dict[str, Any] | None:
    """``ablation.json`` of a checkpoint directory, or None."""
    from pathlib import Path

    path = Path(checkpoint) / FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None
