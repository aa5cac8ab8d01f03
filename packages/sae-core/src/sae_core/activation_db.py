"""Read the feature activation database ``sae analyze`` writes beside a checkpoint.

:func:`open_activation_db` memory-maps the shards (:mod:`sae_core.analyses.activation_db`
describes the files), so a query reads only the latent or the example it asks about::

    db = open_activation_db("runs/quickstart/topk-k32")
    db.frequency()                      # (d_sae,) share of analysed tokens on which each latent fires
    db.top(7, 10)                       # the 10 examples (cache rows) where latent 7 fires most
    db.quantiles(7, n_bands=10, per_band=5, seed=0)   # examples from 10 bands of its max activation
    db.sample(7, 20, seed=0)            # 20 random examples on which it fires
    db.latents_at(example=123, position=4)            # which latents fire at that token

Examples are cache rows (an image, a text window); an example's *score* for a latent is its
largest |code| over the example's tokens (as in ``top_examples.safetensors``), and ``value`` the
signed code at that token. Token numbers count the analysed tokens in pass order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.checkpoint.filenames import ACTIVATION_DB_DIR, ACTIVATION_DB_MANIFEST
from sae_core.errors import SAEError


@dataclass
class Hits:
    """Examples (one per cache row) where a latent fires, each with its strongest token."""

    row: np.ndarray  # (n,) cache row
    example: np.ndarray  # (n,) dataset example id
    token: np.ndarray  # (n,) token number of the strongest token
    slot: np.ndarray  # (n,) its column in the row
    position: np.ndarray  # (n,) its position in the source example (-1: a special token)
    token_id: np.ndarray  # (n,) its token id (-1 for images)
    value: np.ndarray  # (n,) the latent's signed code there
    score: np.ndarray  # (n,) |value|: the example's score

    def __len__(self) -> int:
        return len(self.row)

    def take(self, idx: np.ndarray) -> Hits:
        return Hits(**{k: getattr(self, k)[idx] for k in _HIT_FIELDS})

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per example."""
        return [{k: getattr(self, k)[i].item() for k in _HIT_FIELDS} for i in range(len(self))]


_HIT_FIELDS = ("row", "example", "token", "slot", "position", "token_id", "value", "score")


@dataclass
class Band:
    """One activation band of a latent: examples whose score / the latent's max is in (lo, hi]."""

    lo: float
    hi: float
    count: int  # examples in the band
    hits: Hits  # up to ``per_band`` of them, drawn at random (seeded), by score descending


@dataclass
class LatentFirings:
    """Every firing of one latent, in token order."""

    token: np.ndarray  # (k,) int64 token number
    value: np.ndarray  # (k,) float32 signed code
    row: np.ndarray  # (k,) int64 cache row
    slot: np.ndarray  # (k,) int64 column in the row
    example: np.ndarray  # (k,) int64 dataset example id


@dataclass
class Firings:
    """Every token at which something fires (``latents_at``), one entry per (token, latent)."""

    token: np.ndarray  # (n,)
    row: np.ndarray
    slot: np.ndarray
    position: np.ndarray
    token_id: np.ndarray
    latent: np.ndarray
    value: np.ndarray  # signed codes; entries are by token, then |value| descending

    def records(self) -> list[dict[str, Any]]:
        keys = ("token", "row", "slot", "position", "token_id", "latent", "value")
        return [{k: getattr(self, k)[i].item() for k in keys} for i in range(len(self.token))]


@dataclass
class _Shard:
    path: Path
    name: str
    lo: int
    hi: int
    _cache: dict[str, np.ndarray] = field(default_factory=dict)
    _rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def row_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first token, cache row, example id) of the shard's rows, copied (small: one per row)."""
        if self._rows is None:
            table = self.get("rows")
            self._rows = (np.array(table["first_token"]), np.array(table["row"]), np.array(table["example"]))
        return self._rows

    def get(self, key: str) -> np.ndarray:
        if key not in self._cache:
            mapped = np.load(self.path / f"{self.name}.{key}.npy", mmap_mode="r", allow_pickle=False)
            self._cache[key] = mapped.view(np.ndarray)  # plain ndarray slicing (np.memmap's is slow Python)
        return self._cache[key]


class ActivationDB:
    """A feature activation database (read-only, memory-mapped); see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        self.manifest: dict[str, Any] = json.loads((path / ACTIVATION_DB_MANIFEST).read_text())
        m = self.manifest
        self.d_sae: int = int(m["d_sae"])
        self.n_tokens: int = int(m["n_tokens"])
        self.n_rows: int = int(m["n_rows"])
        self.tokens_per_example: int = int(m["tokens_per_example"])
        self._shards = [_Shard(path, s["name"], int(s["tokens"][0]), int(s["tokens"][1])) for s in m["shards"]]
        self._los = np.array([s.lo for s in self._shards], dtype=np.int64)

    @property
    def shards(self) -> list[_Shard]:
        """The shards (``get(name)``: one of their arrays, memory-mapped; ``row_columns()``), in token order."""
        return self._shards

    def release(self) -> None:
        """Unmap the shards (they are mapped again on the next query). Pages of a mapped file
        count as resident memory once read; a scan over every latent calls this now and then so
        its resident memory stays bounded instead of growing to the database's size."""
        for s in self._shards:
            s._cache.clear()

    def __repr__(self) -> str:
        return f"ActivationDB({str(self.path)!r}, d_sae={self.d_sae}, n_tokens={self.n_tokens}, n_rows={self.n_rows})"

    # --- per latent -------------------------------------------------------------------------

    def check_latent(self, latent: int) -> int:
        """``latent`` as an int, or a one-line error if this SAE has no such latent."""
        latent = int(latent)
        if not 0 <= latent < self.d_sae:
            raise SAEError(f"latent {latent} is out of range: this SAE has {self.d_sae} latents (0..{self.d_sae - 1})")
        return latent

    def counts(self) -> np.ndarray:
        """(d_sae,) int64: on how many analysed tokens each latent fires."""
        out = np.zeros(self.d_sae, dtype=np.int64)
        for s in self._shards:
            out += np.diff(s.get("offsets"))
        return out

    def frequency(self) -> np.ndarray:
        """(d_sae,) float64: the share of analysed tokens on which each latent fires."""
        return self.counts() / max(self.n_tokens, 1)

    def activations(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """Every firing of ``latent``: token numbers (k,) int64 ascending and signed codes (k,) float32."""
        f = self.firings(latent)
        return f.token, f.value

    def firings(self, latent: int) -> LatentFirings:
        """Every firing of ``latent`` with its cache row, slot and example (no token-table lookups)."""
        latent = self.check_latent(latent)
        parts: list[tuple[np.ndarray, ...]] = []
        for s in self._shards:
            off = s.get("offsets")
            a, b = int(off[latent]), int(off[latent + 1])
            tok = s.get("token")[a:b].astype(np.int64) + s.lo  # copies: no view keeps the map alive
            first, row, example = s.row_columns()
            at = np.searchsorted(first, tok, side="right") - 1  # (k,) the shard row holding each token
            parts.append((tok, np.array(s.get("value")[a:b], dtype=np.float32), row[at],
                          s.get("slot")[a:b].astype(np.int64), example[at]))
        if not parts:
            e = np.zeros(0, dtype=np.int64)
            return LatentFirings(e, np.zeros(0, dtype=np.float32), e, e, e)
        return LatentFirings(*(np.concatenate(c) for c in zip(*parts, strict=True)))

    def token_table(self, tokens: np.ndarray) -> np.ndarray:
        """Records (TOKEN_DTYPE: row, slot, position, example, token_id) of token numbers ``tokens``."""
        from sae_core.analyses.activation_db import TOKEN_DTYPE  # lazy: loads torch, cuda

        tokens = np.asarray(tokens, dtype=np.int64)
        out = np.empty(len(tokens), dtype=TOKEN_DTYPE)
        if not len(tokens):
            return out
        if tokens.min() < 0 or tokens.max() >= self.n_tokens:
            raise SAEError(f"token numbers must be in 0..{self.n_tokens - 1}")
        if np.all(tokens[1:] >= tokens[:-1]):  # ascending (a latent's firings): one slice per shard
            cuts = np.searchsorted(tokens, np.append(self._los[1:], self.n_tokens))
            a = 0
            for s, b in zip(self._shards, cuts, strict=True):
                if b > a:
                    out[a:b] = s.get("tokens")[tokens[a:b] - s.lo]
                a = b
            return out
        which = np.searchsorted(self._los, tokens, side="right") - 1
        for i in np.unique(which):
            sel = which == i
            s = self._shards[i]
            out[sel] = s.get("tokens")[tokens[sel] - s.lo]
        return out

    def examples(self, latent: int) -> Hits:
        """Every example (cache row) where ``latent`` fires, in row order, with its strongest token."""
        f = self.firings(latent)
        first = best_per_row(f.row, f.value)
        return self.hits(f.token[first], f.value[first])

    def hits(self, tokens: np.ndarray, values: np.ndarray) -> Hits:
        """:class:`Hits` of the given token numbers and codes (their token records looked up)."""
        return _hits(self.token_table(tokens), np.asarray(tokens), np.asarray(values))

    def top(self, latent: int, n: int = 10) -> Hits:
        """The ``n`` examples with the largest score (|code|) of ``latent``, best first."""
        ex = self.examples(latent)
        return ex.take(np.argsort(-ex.score, kind="stable")[: max(int(n), 0)])

    def band_edges(self, n_bands: int) -> np.ndarray:
        """(n_bands + 1,) band edges as fractions of a latent's max score: 0, 1/B, ..., 1."""
        if int(n_bands) < 1:
            raise SAEError(f"the number of quantile bands must be >= 1, got {n_bands}")
        return np.linspace(0.0, 1.0, int(n_bands) + 1)

    def quantiles(self, latent: int, n_bands: int = 10, per_band: int = 5, seed: int = 0) -> list[Band]:
        """Examples from ``n_bands`` bands of ``latent``'s max activation (SAEDashboard-style):
        band b holds the examples whose score / max score is in (b/B, (b+1)/B]; up to
        ``per_band`` of each are drawn at random (:func:`draw_keys`: ``seed``, the latent and the
        row), shown by score descending."""
        return pick_bands(self.examples(latent), self.band_edges(n_bands), per_band, seed, latent)

    def sample(self, latent: int, n: int = 10, seed: int = 0) -> Hits:
        """``n`` examples where ``latent`` fires, drawn uniformly at random (``seed``), in row order."""
        ex = self.examples(latent)
        if len(ex) <= n:
            return ex
        rng = np.random.default_rng([int(seed), int(latent)])
        return ex.take(np.sort(rng.choice(len(ex), int(n), replace=False)))

    def token_acts(self, latent: int, rows: np.ndarray) -> np.ndarray:
        """(len(rows), T) float32: ``latent``'s codes on every token of the given cache rows (0 where
        it does not fire or the SAE does not read the token)."""
        f = self.firings(latent)
        return scatter_rows(f.row, f.slot, f.value, rows, self.tokens_per_example)

    # --- per example ------------------------------------------------------------------------

    def latents_at(self, example: int, position: int | None = None) -> Firings:
        """Which latents fire on the tokens of dataset example ``example`` (all its analysed
        tokens, or only those at ``position`` in the source example), with their codes."""
        tok_parts, rec_parts = [], []
        for s in self._shards:
            table = s.get("tokens")
            sel = table["example"] == int(example)
            if position is not None:
                sel &= table["position"] == int(position)
            hit = np.flatnonzero(sel)
            if len(hit):
                tok_parts.append((s, hit))
        latents, values, tokens = [], [], []
        for s, hit in tok_parts:
            local = s.get("token")
            found = np.isin(local, hit.astype(local.dtype))  # a scan of this shard's firings
            entries = np.flatnonzero(found)
            off = s.get("offsets")
            latents.append(np.searchsorted(off, entries, side="right") - 1)
            values.append(np.array(s.get("value")[entries], dtype=np.float32))
            tokens.append(local[entries].astype(np.int64) + s.lo)
            rec_parts.append(s)
        if not tokens:
            if not any((s.get("tokens")["example"] == int(example)).any() for s in self._shards):
                raise SAEError(f"example {example} is not among the {self.n_rows} analysed rows of {self.path}; "
                               "pick an example id shown by `sae query --feature`")
            empty = np.zeros(0, dtype=np.int64)
            return Firings(empty, empty, empty, empty, empty, empty, np.zeros(0, dtype=np.float32))
        tok, lat, val = np.concatenate(tokens), np.concatenate(latents), np.concatenate(values)
        order = np.lexsort((-np.abs(val), tok))
        tok, lat, val = tok[order], lat[order], val[order]
        table = self.token_table(tok)
        return Firings(tok, table["row"], table["slot"], table["position"], table["token_id"], lat.astype(np.int64), val)

    @cached_property
    def rows(self) -> np.ndarray:
        """ROW_DTYPE records (row, example, first_token) of every analysed cache row."""
        return np.concatenate([s.get("rows") for s in self._shards]) if self._shards else np.zeros(0)

    def row_tokens(self, rows: np.ndarray) -> np.ndarray | None:
        """(len(rows), T) int32 token ids of whole cache rows (text caches), else None."""
        if not self.manifest.get("row_tokens"):
            return None
        rows = np.asarray(rows, dtype=np.int64)
        out = np.full((len(rows), self.tokens_per_example), -1, dtype=np.int32)
        for s in self._shards:
            have = s.get("rows")["row"]
            at = np.searchsorted(have, rows)
            ok = (at < len(have)) & (have[np.minimum(at, len(have) - 1)] == rows)
            if ok.any():
                out[ok] = s.get("row_tokens")[at[ok]]
        return out


def best_per_row(row: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of each row's strongest firing (the first of ties), for firings in row order."""
    if not len(row):
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]]))  # rows are ascending along tokens
    counts = np.diff(np.append(starts, len(row)))
    mag = np.abs(value)
    best = mag == np.repeat(np.maximum.reduceat(mag, starts), counts)  # firings at their row's max
    cand = np.flatnonzero(best)
    group = np.repeat(np.arange(len(starts)), counts)[cand]
    return cand[np.concatenate([[True], group[1:] != group[:-1]])]


def scatter_rows(row: np.ndarray, slot: np.ndarray, value: np.ndarray, rows: np.ndarray, t: int) -> np.ndarray:
    """(len(rows), t) float32: the firings (cache ``row``, ``slot``, ``value`` each (k,)) that fall
    on cache ``rows``, placed at their slots (rows may repeat; -1 rows stay 0)."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros((len(rows), t), dtype=np.float32)
    if not len(rows) or not len(value):
        return out
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    lo = np.searchsorted(srt, row, side="left")  # first output with the firing's row
    reps = np.searchsorted(srt, row, side="right") - lo
    for j in range(int(reps.max())):  # rows repeated j + 1 times (usually at most once)
        sel = np.flatnonzero(reps > j)
        out[order[lo[sel] + j], slot[sel]] = value[sel]
    return out


def draw_keys(seed: int, latent: np.ndarray | int, row: np.ndarray) -> np.ndarray:
    """(n,) uint64 random keys of (seed, latent, cache row): a splitmix64 hash, so the examples a
    band draws (the smallest keys) are the same whether one latent or a block of latents is
    processed (``sae query --quantiles`` and ``quantile_examples.safetensors`` agree)."""
    row = np.asarray(row, dtype=np.int64).astype(np.uint64)
    lat = np.broadcast_to(np.asarray(latent, dtype=np.int64), row.shape).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = np.uint64(int(seed) & (2**64 - 1)) * np.uint64(0x9E3779B97F4A7C15) + lat * np.uint64(0xD1B54A32D192ED03)
        x = x + row * np.uint64(0x8CB92BA72F3D8DD7)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def band_picks(score: np.ndarray, rows: np.ndarray, edges: np.ndarray, per_band: int, seed: int, latent: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_band`` examples drawn at random (:func:`draw_keys` of ``seed``, ``latent`` and
    each example's cache row) from each band of ``edges`` (:func:`band_of`): indices into
    ``score`` (B, per_band), -1 where a band has fewer, each band's picks by score descending;
    and the examples per band (B,)."""
    n_bands = len(edges) - 1
    if not len(score):  # the latent never fired
        return np.full((n_bands, int(per_band)), -1, dtype=np.int64), np.zeros(n_bands, dtype=np.int64)
    band = band_of(score, edges)
    order = np.lexsort((draw_keys(seed, latent, rows), band))  # by band, then key: a random subset first
    sb = band[order]
    starts = np.searchsorted(sb, np.arange(n_bands))
    counts = np.searchsorted(sb, np.arange(n_bands), side="right") - starts
    inside = sb >= 0
    pos = np.arange(len(sb)) - starts[np.maximum(sb, 0)]  # rank within its band
    take = inside & (pos < per_band)
    picks = np.full((n_bands, int(per_band)), -1, dtype=np.int64)
    picks[sb[take], pos[take]] = order[take]
    key = np.where(picks >= 0, -np.asarray(score, dtype=np.float64)[np.maximum(picks, 0)], np.inf)
    return np.take_along_axis(picks, np.argsort(key, axis=1, kind="stable"), axis=1), counts


def pick_bands(ex: Hits, edges: np.ndarray, per_band: int, seed: int, latent: int) -> list[Band]:
    """:func:`band_picks` as :class:`Band` s of ``ex`` (the examples where a latent fires)."""
    picks, counts = band_picks(ex.score, ex.row, edges, per_band, seed, latent)
    return [Band(float(edges[b]), float(edges[b + 1]), int(counts[b]), ex.take(p[p >= 0])) for b, p in enumerate(picks)]


def band_of(score: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Band of each score: b where edges[b] < score / max <= edges[b + 1] (-1 for score 0)."""
    score = np.asarray(score, dtype=np.float64)
    if not len(score) or score.max() <= 0:
        return np.full(len(score), -1, dtype=np.int64)
    frac = score / score.max()
    band = np.searchsorted(edges[1:-1], frac, side="left").astype(np.int64)
    band[frac <= 0] = -1
    return band


def _hits(table: np.ndarray, tok: np.ndarray, val: np.ndarray) -> Hits:
    return Hits(row=table["row"].astype(np.int64), example=table["example"].astype(np.int64), token=tok.astype(np.int64),
                slot=table["slot"].astype(np.int64), position=table["position"].astype(np.int64),
                token_id=table["token_id"].astype(np.int64), value=val.astype(np.float32),
                score=np.abs(val).astype(np.float32))


def open_activation_db(path: str | Path) -> ActivationDB:
    """The activation database of a checkpoint (``<ckpt>/activations``), or of that directory."""
    path = Path(path)
    for cand in (path / ACTIVATION_DB_DIR, path):
        if (cand / ACTIVATION_DB_MANIFEST).is_file():
            return ActivationDB(cand)
    if (path / ACTIVATION_DB_DIR).is_dir():
        raise SAEError(f"the activation database in {path / ACTIVATION_DB_DIR} is incomplete (no {ACTIVATION_DB_MANIFEST}: "
                       f"its `sae analyze` was interrupted); rerun `sae analyze {path} --only activation-db`")
    raise SAEError(f"no activation database in {path}; build it with `sae analyze {path} --only activation-db`")
