"""``feature-summaries``: one JSON line per latent with everything an auto-interp pipeline reads.

Joins the per-latent outputs of the other analyses into ``feature_summaries.jsonl`` (one row per
latent, in latent order), so explaining or scoring a latent needs one file, not six:

- ``latent``; ``frequency`` (firing density), ``mean_activation``, ``max_activation``
  (``feature_stats.safetensors``);
- ``top_examples``: the dataset example ids of its top examples, strongest first, and for text
  ``top_tokens``: the tokens it fires on inside those examples, ranked by their summed |code|
  (strength and frequency together), each ``{"token", "id", "count", "max"}`` (``count``: firing
  occurrences among the top examples; ``max``: the largest |code|) (``top_examples.safetensors``
  ``token_ids`` and ``token_acts``; strings from the cache's ``vocab.json``, made readable like the
  viewer does: :func:`sae_core.tokens.detokenize`);
- ``promoted`` / ``suppressed``: ``{"token", "id", "logit"}`` (``logit_effects.*``, LMs only);
- ``neighbours``: ``{"latent", "cosine"}`` (``neighbours.safetensors``);
- ``cooccurring``: ``{"latent", "count", "jaccard", "pmi"}`` (``cooccurrence.safetensors``).

Fields whose source file is absent (an analysis skipped, or not run) are left out of every row,
and the summary lists them as ``missing``. Reads the sources in blocks of latents (safetensors
slices), so memory stays bounded for 65k-latent SAEs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sae_core import Analysis, AnalysisContext, SAEError, atomic_open, filenames, load_vocab, token_string
from sae_core.analyses.common import option

BLOCK = 1024  # latents read at once


def _slices(path: Path, keys: tuple[str, ...], lo: int, hi: int) -> dict[str, np.ndarray]:
    from safetensors import safe_open  # lazy: loads safetensors

    with safe_open(str(path), "np") as f:
        return {k: f.get_slice(k)[lo:hi] for k in keys if k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)


def _top_tokens(ids: np.ndarray, acts: np.ndarray, vocab: list[str] | None, m: int) -> list[dict[str, Any]]:
    """The ``m`` token ids with the largest summed |code| among one latent's top examples."""

    mag = np.abs(acts.astype(np.float32))  # (k, T)
    keep = (mag > 0) & (ids >= 0)
    if not keep.any():
        return []
    uniq, inv = np.unique(ids[keep], return_inverse=True)
    total, peak = np.zeros(len(uniq)), np.zeros(len(uniq))  # (tokens,) summed and largest |code|
    count = np.zeros(len(uniq), dtype=np.int64)  # (tokens,) firing occurrences
    np.add.at(total, inv, mag[keep])
    np.maximum.at(peak, inv, mag[keep])
    np.add.at(count, inv, 1)
    order = np.lexsort((uniq, -total))[:m]
    return [{"token": token_string(vocab, int(uniq[o])), "id": int(uniq[o]), "count": int(count[o]),
             "max": round(float(peak[o]), 6)} for o in order]


def summary_rows(checkpoint: str | Path, *, vocab: list[str] | None = None, n_tokens: int = 10,
                 block: int = BLOCK) -> Iterator[dict[str, Any]]:
    """The rows of ``feature_summaries.jsonl`` of a checkpoint whose analyses have run (see the
    module docstring), one per latent in order; ``vocab``: token pieces by id (text caches)."""

    ckpt = Path(checkpoint)
    stats = ckpt / filenames.FEATURE_STATS_FILE
    if not stats.is_file():

        raise SAEError(f"{ckpt} has no {filenames.FEATURE_STATS_FILE}; run `sae analyze {ckpt} --only feature-stats` first")
    from safetensors import safe_open  # lazy: loads safetensors

    with safe_open(str(stats), "np") as f:
        d_sae = int(f.get_slice("frequency").get_shape()[0])
    logit_tokens: dict[str, str] = {}
    if (ckpt / filenames.LOGIT_EFFECTS_FILE).is_file() and (ckpt / filenames.LOGIT_EFFECTS_META_FILE).is_file():
        logit_tokens = json.loads((ckpt / filenames.LOGIT_EFFECTS_META_FILE).read_text()).get("tokens", {})

    def logit_string(i: int) -> str:
        piece = logit_tokens.get(str(i))
        return token_string([piece], 0) if piece is not None else token_string(vocab, i)

    for lo in range(0, d_sae, block):
        hi = min(lo + block, d_sae)
        st = _slices(stats, ("frequency", "mean_activation", "max_activation"), lo, hi)
        top = _slices(ckpt / filenames.TOP_EXAMPLES_FILE, ("rows", "examples", "token_ids", "token_acts"), lo, hi) \
            if (ckpt / filenames.TOP_EXAMPLES_FILE).is_file() else {}
        logit = _slices(ckpt / filenames.LOGIT_EFFECTS_FILE, ("top_ids", "top_values", "bottom_ids", "bottom_values"), lo, hi) \
            if (ckpt / filenames.LOGIT_EFFECTS_FILE).is_file() else {}
        nb = _slices(ckpt / filenames.NEIGHBOURS_FILE, ("indices", "cosine"), lo, hi) \
            if (ckpt / filenames.NEIGHBOURS_FILE).is_file() else {}
        co = _slices(ckpt / filenames.COOCCURRENCE_FILE, ("indices", "count", "jaccard", "pmi"), lo, hi) \
            if (ckpt / filenames.COOCCURRENCE_FILE).is_file() else {}
        for r in range(hi - lo):
            row: dict[str, Any] = {"latent": lo + r, "frequency": float(st["frequency"][r]),
                                   "mean_activation": float(st["mean_activation"][r]),
                                   "max_activation": float(st["max_activation"][r])}
            if top:
                filled = top["rows"][r] >= 0  # (k,)
                row["top_examples"] = [int(e) for e in top["examples"][r][filled]]
                if "token_ids" in top:
                    row["top_tokens"] = _top_tokens(top["token_ids"][r][filled], top["token_acts"][r][filled], vocab, n_tokens)
            if logit:
                row["promoted"] = [{"token": logit_string(int(i)), "id": int(i), "logit": float(v)}
                                   for i, v in zip(logit["top_ids"][r], logit["top_values"][r], strict=True)]
                row["suppressed"] = [{"token": logit_string(int(i)), "id": int(i), "logit": float(v)}
                                     for i, v in zip(logit["bottom_ids"][r], logit["bottom_values"][r], strict=True)]
            if nb:
                row["neighbours"] = [{"latent": int(j), "cosine": float(c)}
                                     for j, c in zip(nb["indices"][r], nb["cosine"][r], strict=True)]
            if co:
                row["cooccurring"] = [{"latent": int(j), "count": int(c), "jaccard": float(s), "pmi": float(p)}
                                      for j, c, s, p in zip(co["indices"][r], co["count"][r], co["jaccard"][r],
                                                            co["pmi"][r], strict=True) if j >= 0]
            yield row


class FeatureSummaries(Analysis):
    """One JSON line per latent joining density, activations, top tokens, logit effects,
    decoder neighbours and co-occurring latents (what auto-interpretation reads)."""

    name: ClassVar[str] = "feature-summaries"
    requires: ClassVar[tuple[str, ...]] = ("feature-stats", "top-examples", "logit-effects", "decoder-neighbours",
                                           "cooccurrence")
    options: ClassVar[tuple[str, ...]] = ("summary_tokens",)

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:

        m = option(ctx, "summary_tokens", 10, int, "positive")
        vocab = load_vocab(ctx.reader.path)
        path = ctx.checkpoint / filenames.FEATURE_SUMMARIES_FILE
        n = 0
        with atomic_open(path, "w") as f:
            for row in summary_rows(ctx.checkpoint, vocab=vocab, n_tokens=m):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        sources = {filenames.TOP_EXAMPLES_FILE: "top-examples", filenames.LOGIT_EFFECTS_FILE: "logit-effects",
                   filenames.NEIGHBOURS_FILE: "decoder-neighbours", filenames.COOCCURRENCE_FILE: "cooccurrence"}
        missing = [a for file, a in sources.items() if not (ctx.checkpoint / file).is_file()]
        return {"latents": n, "missing": missing}
