"""``quantile-examples``: for every latent, examples from each band of its activation range.

Top examples show only the strongest activations, which can mislead about what a latent does
most of the time. Following SAEDashboard, each latent's range (0, max] — max = its largest |code|
over the analysed tokens — is cut into ``quantile_bands`` (10) equal bands of fractions of the
max; an example (cache row) falls in the band of its score (its largest |code| of the latent) and
up to ``quantile_m`` (5) examples per band are drawn at random (``quantile_seed``).

Read from the activation database (:mod:`sae_core.activation_db`), not the cache: no second
encode, and ``sae query --quantiles`` shows the same bands. Writes ``quantile_examples.safetensors``
(``rows``, ``examples`` [d_sae, B, m] (-1: empty slot), ``values`` [d_sae, B, m] scores,
``token_acts`` [d_sae, B, m, T] f16 signed codes, ``token_ids`` [d_sae, B, m, T] (text),
``band_counts`` [d_sae, B] examples in each band) and ``quantile_examples.json`` (band edges,
m, split, n_rows, n_tokens and what the viewer needs to draw examples, as ``top_examples.json``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from sae_core.analyses.common import option, save_json, save_safetensors
from sae_core.layout import QUANTILE_EXAMPLES_FILE, QUANTILE_EXAMPLES_META_FILE
from sae_core.protocols.analysis import Analysis, AnalysisContext


class QuantileExamples(Analysis):
    """Examples from equal bands of each latent's activation range (read from the activation database)."""

    name: ClassVar[str] = "quantile-examples"
    requires: ClassVar[tuple[str, ...]] = ("activation-db",)
    options: ClassVar[tuple[str, ...]] = ("quantile_bands", "quantile_m", "quantile_seed")

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        from sae_core.activation_db import band_picks, best_per_row, open_activation_db, scatter_rows
        from sae_core.analyses.top_examples import example_meta

        n_bands = option(ctx, "quantile_bands", 10, int, "positive")
        m = option(ctx, "quantile_m", 5, int, "positive")
        seed = option(ctx, "quantile_seed", 0, int)
        db = open_activation_db(ctx.checkpoint)
        d_sae, t = db.d_sae, db.tokens_per_example
        edges = db.band_edges(n_bands)
        rows = np.full((d_sae, n_bands, m), -1, dtype=np.int64)
        examples = np.full((d_sae, n_bands, m), -1, dtype=np.int64)
        values = np.zeros((d_sae, n_bands, m), dtype=np.float32)
        token_acts = np.zeros((d_sae, n_bands, m, t), dtype=np.float16)
        counts = np.zeros((d_sae, n_bands), dtype=np.int64)
        for latent in range(d_sae):
            if latent % 64 == 63:
                db.release()  # bounded resident memory: mapped pages read so far are dropped
            f = db.firings(latent)
            if not len(f.token):
                continue
            first = best_per_row(f.row, f.value)  # (e,) each example's strongest firing
            score = np.abs(f.value[first])
            picks, counts[latent] = band_picks(score, edges, m, seed, latent)  # (B, m) into first, -1: empty
            ok = picks >= 0
            rows[latent][ok], examples[latent][ok] = f.row[first][picks[ok]], f.example[first][picks[ok]]
            values[latent][ok] = score[picks[ok]]
            token_acts[latent] = scatter_rows(f.row, f.slot, f.value, rows[latent].reshape(-1), t).reshape(n_bands, m, t)
        tensors = {"rows": torch.from_numpy(rows), "examples": torch.from_numpy(examples),
                   "values": torch.from_numpy(values), "token_acts": torch.from_numpy(token_acts),
                   "band_counts": torch.from_numpy(counts)}
        if db.manifest.get("row_tokens"):
            used = np.unique(rows[rows >= 0])
            ids = db.row_tokens(used)  # (u, T)
            token_ids = np.full((d_sae, n_bands, m, t), -1, dtype=np.int32)
            ok = rows >= 0
            token_ids[ok] = ids[np.searchsorted(used, rows[ok])]
            tensors["token_ids"] = torch.from_numpy(token_ids)
        save_safetensors(ctx.checkpoint / QUANTILE_EXAMPLES_FILE, tensors)
        head = {"n_bands": n_bands, "m": m, "seed": seed, "band_edges": edges.tolist(),
                "band_edges_of": "fractions of each latent's max |code| over the analysed tokens; band b is (edges[b], edges[b+1]]",
                "split": db.manifest["split"], "n_rows": db.n_rows, "n_tokens": db.n_tokens}
        save_json(ctx.checkpoint / QUANTILE_EXAMPLES_META_FILE, {**head, **example_meta(ctx)})
        return {k: head[k] for k in ("n_bands", "m", "split", "n_rows", "n_tokens")} | {
            "latents_with_examples": int((counts.sum(1) > 0).sum())}
