"""Readers of the per-latent analysis files beyond feature stats and top examples: quantile
examples, decoder neighbours, co-occurring latents, logit effects and probe results.

Each reader takes a checkpoint directory and one latent, slices the (d_sae, ...) tensors with
``safe_open(...).get_slice`` (a 65k-latent SAE reads one row), and returns None when its file is
absent: the viewer shows a section only for the files an analysis wrote. The formats are in
docs/analyses.md; -1 marks an empty slot in every index tensor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

QUANTILE_EXAMPLES, QUANTILE_EXAMPLES_META = "quantile_examples.safetensors", "quantile_examples.json"
NEIGHBOURS = "neighbours.safetensors"
COOCCURRENCE = "cooccurrence.safetensors"
LOGIT_EFFECTS, LOGIT_EFFECTS_META = "logit_effects.safetensors", "logit_effects.json"
PROBE = "probe.json"
FEATURE_STATS_SUMMARY = "feature_stats.json"
#: every file a feature page may read: the snapshot stamp of a page covers all of them
PAGE_FILES: tuple[str, ...] = (
    "feature_stats.safetensors", FEATURE_STATS_SUMMARY, "top_examples.safetensors", "top_examples.json",
    QUANTILE_EXAMPLES, QUANTILE_EXAMPLES_META, NEIGHBOURS, COOCCURRENCE, LOGIT_EFFECTS, LOGIT_EFFECTS_META,
    PROBE, "ablation.json", "downstream.json", "reconstruction.json",
)
#: below this many analysed tokens, frequencies and top examples are noisy: the page warns
FEW_TOKENS = 20_000


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _rows(path: Path, latent: int) -> dict[str, np.ndarray] | None:
    """Row ``latent`` of every tensor in a (d_sae, ...) safetensors file."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return {key: f.get_slice(key)[latent : latent + 1][0] for key in f.keys()}  # noqa: SIM118


def quantile_examples(ckpt: Path, latent: int) -> dict[str, Any] | None:
    """Examples of one latent per activation band: ``bands`` is a list of
    {"low", "high" (fractions of the latent's max), "values" (m',), "token_acts" (m', T),
    "token_ids" (m', T) or None, "examples" (m',), "rows" (m',)} without the empty (-1) slots."""
    t = _rows(ckpt / QUANTILE_EXAMPLES, latent)
    if t is None:
        return None
    meta = read_json(ckpt / QUANTILE_EXAMPLES_META) or {}
    edges = list(meta.get("band_edges", []))
    bands = []
    for b in range(t["rows"].shape[0]):  # rows: (n_bands, m)
        keep = t["rows"][b] >= 0
        bands.append({
            "low": edges[b] if b < len(edges) else None,
            "high": edges[b + 1] if b + 1 < len(edges) else None,
            **{key: t[key][b][keep] for key in ("rows", "examples", "values", "token_acts") if key in t},
            "token_ids": t["token_ids"][b][keep] if "token_ids" in t else None,
        })
    return {"meta": meta, "bands": bands}


def neighbours(ckpt: Path, latent: int) -> list[tuple[int, float]] | None:
    """Latents whose decoder directions are closest to this one's: (latent, cosine), best first."""
    t = _rows(ckpt / NEIGHBOURS, latent)
    if t is None:
        return None
    return [(int(i), float(c)) for i, c in zip(t["indices"], t["cosine"], strict=True) if i >= 0]


def cooccurrence(ckpt: Path, latent: int) -> list[dict[str, Any]] | None:
    """Latents that fire on the same tokens as this one: {latent, count, jaccard, pmi} each."""
    t = _rows(ckpt / COOCCURRENCE, latent)
    if t is None:
        return None
    return [{"latent": int(i), "count": int(c), "jaccard": float(j), "pmi": float(p)}
            for i, c, j, p in zip(t["indices"], t["count"], t["jaccard"], t["pmi"], strict=True) if i >= 0]


def logit_effects(ckpt: Path, latent: int) -> dict[str, Any] | None:
    """Tokens whose logits the latent's decoder direction raises / lowers most:
    {"top": [(token id, value, token string)], "bottom": [...]} or {"skipped": reason}."""
    meta = read_json(ckpt / LOGIT_EFFECTS_META)
    if isinstance(meta, dict) and "skipped" in meta:
        return {"skipped": str(meta["skipped"])}
    t = _rows(ckpt / LOGIT_EFFECTS, latent)
    if t is None:
        return None
    names = (meta or {}).get("tokens", {})

    def side(ids: np.ndarray, values: np.ndarray) -> list[tuple[int, float, str]]:
        return [(int(i), float(v), str(names.get(str(int(i)), f"#{int(i)}"))) for i, v in zip(ids, values, strict=True)
                if i >= 0]

    return {"top": side(t["top_ids"], t["top_values"]), "bottom": side(t["bottom_ids"], t["bottom_values"])}


def probe(ckpt: Path) -> dict[str, Any] | None:
    """``probe.json``: which latents predict which labels (per_label), the linear probe per label."""
    doc = read_json(ckpt / PROBE)
    return doc if isinstance(doc, dict) else None


def probe_labels(doc: dict[str, Any] | None, latent: int) -> list[dict[str, Any]]:
    """The labels a latent predicts (it is among a label's top latents): {label, ap, f1, threshold}."""
    if not doc:
        return []
    found = []
    for label, entries in doc.get("per_label", {}).items():
        for e in entries:
            if int(e.get("latent", -1)) == latent:
                found.append({"label": label, **{k: e.get(k) for k in ("ap", "f1", "threshold")}})
    return sorted(found, key=lambda r: -(r["ap"] or 0.0))


def provenance(doc: dict[str, Any] | None, what: str, count_key: str = "n_tokens") -> tuple[str, bool]:
    """A sentence saying which split and how many tokens an analysis file's numbers come from,
    and whether that is too few to trust (< :data:`FEW_TOKENS`)."""
    if not doc:
        return f"{what}: not computed", False
    n = doc.get(count_key)
    split = doc.get("split")
    unit = "tokens" if count_key == "n_tokens" else count_key.removeprefix("n_")
    where = f"the `{split}` split" if split else "an unrecorded split"
    line = f"{what}: {n if n is not None else 'an unrecorded number of'} {unit} of {where}"
    return line, count_key == "n_tokens" and isinstance(n, int) and n < FEW_TOKENS
