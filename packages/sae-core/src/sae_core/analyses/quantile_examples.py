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

from sae_core import Analysis, AnalysisContext, band_of, draw_keys, filenames, open_activation_db
from sae_core.analyses.common import option, save_json, save_safetensors
from sae_core.analyses.top_examples import example_meta


class QuantileExamples(Analysis):
    """Examples from equal bands of each latent's activation range (read from the activation database)."""

    name: ClassVar[str] = "quantile-examples"
    requires: ClassVar[tuple[str, ...]] = ("activation-db",)
    options: ClassVar[tuple[str, ...]] = ("quantile_bands", "quantile_m", "quantile_seed")

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:

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
        # blocks of latents of about BLOCK_FIRINGS firings: vectorized, and bounded memory
        per_latent = db.counts()
        lo = 0
        while lo < d_sae:
            hi = lo + 1 + int(np.searchsorted(np.cumsum(per_latent[lo + 1 :]), BLOCK_FIRINGS))
            hi = min(hi, d_sae)
            _block(db, lo, hi, edges, m, seed, rows, examples, values, token_acts, counts)
            db.release()  # bounded resident memory: mapped pages read so far are dropped
            lo = hi
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
        save_safetensors(ctx.checkpoint / filenames.QUANTILE_EXAMPLES_FILE, tensors)
        head = {"n_bands": n_bands, "m": m, "seed": seed, "band_edges": edges.tolist(),
                "band_edges_of": "fractions of each latent's max |code| over the analysed tokens; band b is (edges[b], edges[b+1]]",
                "split": db.manifest["split"], "n_rows": db.n_rows, "n_tokens": db.n_tokens}
        save_json(ctx.checkpoint / filenames.QUANTILE_EXAMPLES_META_FILE, {**head, **example_meta(ctx)})
        return {k: head[k] for k in ("n_bands", "m", "split", "n_rows", "n_tokens")} | {
            "latents_with_examples": int((counts.sum(1) > 0).sum())}


BLOCK_FIRINGS = 1 << 19  # firings per block of latents (~60 MB of temporaries: ~15 int64 arrays of this length)


def _block(db: Any, lo: int, hi: int, edges: np.ndarray, m: int, seed: int, rows: np.ndarray, examples: np.ndarray,
           values: np.ndarray, token_acts: np.ndarray, counts: np.ndarray) -> None:
    """Fill latents [lo, hi) of the output arrays: the same draws as ``db.quantiles`` per latent,
    computed for the whole block at once."""
    n_bands, t = len(edges) - 1, db.tokens_per_example
    firings = _block_firings(db, lo, hi)
    if firings is None:
        return
    lat, row, example, slot, val = firings
    mag = np.abs(val)
    group, firsts = _strongest_per_example(lat, row, mag)
    e_lat, e_row, e_ex, e_score = lat[firsts], row[firsts], example[firsts], mag[firsts]
    band = _bands(e_lat, e_score, edges)
    chosen, c_rank = _draw(e_lat, e_row, e_score, band, lo, n_bands, m, seed, counts)
    cl, cb = e_lat[chosen], band[chosen]
    rows[cl, cb, c_rank], examples[cl, cb, c_rank], values[cl, cb, c_rank] = e_row[chosen], e_ex[chosen], e_score[chosen]
    # token activations of the drawn examples: every firing of their (latent, row) group, at its slot
    slot_of = np.full(len(e_lat), -1, dtype=np.int64)
    slot_of[chosen] = ((cl * n_bands + cb) * m + c_rank)
    dest = slot_of[group]  # (nnz,) flat (latent, band, m) place of each firing's example, -1: not drawn
    hit = dest >= 0
    token_acts.reshape(-1, t)[dest[hit], slot[hit]] = val[hit]


def _block_firings(db: Any, lo: int, hi: int) -> tuple[np.ndarray, ...] | None:
    """Every firing of latents [lo, hi) in the database, as (nnz,) columns (latent, row, example,
    slot, value) sorted by (latent, token); None when none of them fires."""
    parts = []
    for s in db.shards:  # each shard's firings of the block are one contiguous slice, by latent then token
        off = s.get("offsets")
        a, b = int(off[lo]), int(off[hi])
        if a == b:
            continue
        first, row, example = s.row_columns()
        tok = s.get("token")[a:b].astype(np.int64) + s.lo
        at = np.searchsorted(first, tok, side="right") - 1
        lat = np.repeat(np.arange(lo, hi), np.diff(off[lo : hi + 1]))
        parts.append((lat, row[at], example[at], s.get("slot")[a:b].astype(np.int64),
                      np.array(s.get("value")[a:b], dtype=np.float32)))
    if not parts:
        return None
    lat, row, example, slot, val = (np.concatenate(c) for c in zip(*parts, strict=True))
    order = np.argsort(lat, kind="stable")  # (latent, token): shards are in token order
    return lat[order], row[order], example[order], slot[order], val[order]


def _strongest_per_example(lat: np.ndarray, row: np.ndarray, mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples are groups of (latent, row) firings: (group of each firing (nnz,), index of each
    group's strongest firing (e,), the first of ties): an example's score is its largest |code|."""
    new = np.concatenate([[True], (lat[1:] != lat[:-1]) | (row[1:] != row[:-1])])
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, len(lat)))
    group = np.repeat(np.arange(len(starts)), sizes)  # (nnz,) example of each firing
    best = mag == np.repeat(np.maximum.reduceat(mag, starts), sizes)
    cand = np.flatnonzero(best)
    firsts = cand[np.concatenate([[True], group[cand][1:] != group[cand][:-1]])]  # (e,)
    return group, firsts


def _bands(e_lat: np.ndarray, e_score: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(e,) band of each example: its score / its latent's max (``band_of`` per latent); -1 for
    a score of 0, which is in no band."""

    lat_start = np.flatnonzero(np.concatenate([[True], e_lat[1:] != e_lat[:-1]]))
    lat_size = np.diff(np.append(lat_start, len(e_lat)))
    peak = np.repeat(np.maximum.reduceat(e_score, lat_start), lat_size)
    band = np.full(len(e_score), -1, dtype=np.int64)
    ok = peak > 0
    band[ok] = band_of(e_score[ok] / peak[ok], edges) if ok.any() else band[ok]
    band[ok & (e_score <= 0)] = -1
    return band


def _draw(e_lat: np.ndarray, e_row: np.ndarray, e_score: np.ndarray, band: np.ndarray, lo: int, n_bands: int, m: int,
          seed: int, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw up to ``m`` examples per (latent, band) as ``db.quantiles`` does: by (latent, band,
    draw key), the first m of each. Adds every banded example into ``counts`` (d_sae, B); returns
    (drawn examples, their rank within their (latent, band)), by score descending, ties in draw order."""

    pick_order = np.lexsort((draw_keys(seed, e_lat, e_row), band, e_lat))
    pl, pb = e_lat[pick_order], band[pick_order]
    cell = (pl - lo) * n_bands + pb  # (latent, band) of each example, -1 bands out
    rank = _rank_in_runs(cell)
    valid = pb >= 0
    np.add.at(counts, (pl[valid], pb[valid]), 1)
    take = valid & (rank < m)
    chosen = pick_order[take]  # examples drawn
    # within each (latent, band): by score descending, ties in draw order
    tie = np.arange(len(chosen))
    by_score = np.lexsort((tie, -e_score[chosen].astype(np.float64), band[chosen], e_lat[chosen]))
    chosen = chosen[by_score]
    c_cell = (e_lat[chosen] - lo) * n_bands + band[chosen]
    return chosen, _rank_in_runs(c_cell)


def _rank_in_runs(cell: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal consecutive values: [5, 5, 7, 7, 7] → [0, 1, 0, 1, 2]."""
    start = np.concatenate([[True], cell[1:] != cell[:-1]])
    return np.arange(len(cell)) - np.maximum.accumulate(np.where(start, np.arange(len(cell)), 0))
