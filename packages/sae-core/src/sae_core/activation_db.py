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

from sae_core.errors import SAEError
from sae_core.layout import ACTIVATION_DB_DIR, ACTIVATION_DB_MANIFEST


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

    def get(self, key: str) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = np.load(self.path / f"{self.name}.{key}.npy", mmap_mode="r", allow_pickle=False)
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
        latent = self.check_latent(latent)
        toks, vals = [], []
        for s in self._shards:
            off = s.get("offsets")
            a, b = int(off[latent]), int(off[latent + 1])
            toks.append(s.get("token")[a:b].astype(np.int64) + s.lo)
            vals.append(np.asarray(s.get("value")[a:b], dtype=np.float32))
        if not toks:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return np.concatenate(toks), np.concatenate(vals)

    def token_table(self, tokens: np.ndarray) -> np.ndarray:
        """Records (TOKEN_DTYPE: row, slot, position, example, token_id) of token numbers ``tokens``."""
        from sae_core.analyses.activation_db import TOKEN_DTYPE

        tokens = np.asarray(tokens, dtype=np.int64)
        out = np.empty(len(tokens), dtype=TOKEN_DTYPE)
        if not len(tokens):
            return out
        if tokens.min() < 0 or tokens.max() >= self.n_tokens:
            raise SAEError(f"token numbers must be in 0..{self.n_tokens - 1}")
        which = np.searchsorted(self._los, tokens, side="right") - 1
        for i in np.unique(which):
            sel = which == i
            s = self._shards[i]
            out[sel] = s.get("tokens")[tokens[sel] - s.lo]
        return out

    def firings(self, latent: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every firing of ``latent``: token numbers (k,), signed codes (k,) and token records (k,)."""
        tok, val = self.activations(latent)
        return tok, val, self.token_table(tok)

    def examples(self, latent: int) -> Hits:
        """Every example (cache row) where ``latent`` fires, in row order, with its strongest token."""
        return self._examples(*self.firings(latent))

    def _examples(self, tok: np.ndarray, val: np.ndarray, table: np.ndarray) -> Hits:
        if not len(tok):
            return _hits(table, tok, val)
        row = table["row"]
        group = np.concatenate([[0], np.cumsum(row[1:] != row[:-1])])  # rows are ascending along tokens
        order = np.lexsort((-np.abs(val), group))
        first = order[np.concatenate([[True], group[order][1:] != group[order][:-1]])]  # best token per row
        return _hits(table[first], tok[first], val[first])

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
        ``per_band`` of each are drawn at random (``seed``), shown by score descending."""
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
        _, val, table = self.firings(latent)
        return scatter_rows(table, val, rows, self.tokens_per_example)

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
            values.append(np.asarray(s.get("value")[entries], dtype=np.float32))
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


def scatter_rows(table: np.ndarray, val: np.ndarray, rows: np.ndarray, t: int) -> np.ndarray:
    """(len(rows), t) float32: the firings (token records ``table``, codes ``val``) that fall on
    cache ``rows``, placed at their slots (rows may repeat; -1 rows stay 0)."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros((len(rows), t), dtype=np.float32)
    if not len(rows) or not len(val):
        return out
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    lo = np.searchsorted(srt, table["row"], side="left")  # first output with the firing's row
    hi = np.searchsorted(srt, table["row"], side="right")
    for k in np.unique(hi - lo):  # rows repeated k times (usually 0 or 1)
        if k == 0:
            continue
        sel = np.flatnonzero(hi - lo == k)
        for j in range(int(k)):
            out[order[lo[sel] + j], table["slot"][sel]] = val[sel]
    return out


def pick_bands(ex: Hits, edges: np.ndarray, per_band: int, seed: int, latent: int) -> list[Band]:
    """Up to ``per_band`` random examples (seeded by ``seed`` and ``latent``) from each band of
    ``edges`` (see :func:`band_of`), by score descending."""
    band = band_of(ex.score, edges)
    rng = np.random.default_rng([int(seed), int(latent)])
    out = []
    for b in range(len(edges) - 1):
        members = np.flatnonzero(band == b)
        pick = members if len(members) <= per_band else np.sort(rng.choice(members, int(per_band), replace=False))
        pick = pick[np.argsort(-ex.score[pick], kind="stable")]
        out.append(Band(float(edges[b]), float(edges[b + 1]), len(members), ex.take(pick)))
    return out


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
