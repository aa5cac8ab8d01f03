"""``cooccurrence``: per latent, the latents that fire on the same tokens, exactly counted.

For latents i, j: c_ij = the number of tokens on which both fire, n_i = tokens on which i fires,
N = tokens read. Scores: Jaccard c_ij / (n_i + n_j − c_ij) (how interchangeable two latents are:
1 = they always fire together) and PMI log(c_ij · N / (n_i · n_j)) (how much more often than by
chance). Each latent keeps its ``n_top`` partners with the highest Jaccard.

:class:`Cooccurrence` is a streaming accumulator with a plain API (``update`` with the sparse
firing entries of a chunk of tokens, ``result`` at the end), so a shared pass over the cache can
feed it codes it computes once; :class:`CooccurrenceAnalysis` is the ``sae analyze`` analysis
that does its own pass. Why this shape: the counts of the pairs that end up in a latent's top n
must be exact, but which pairs those are is only known once every token has been seen, and the
full d_sae × d_sae count matrix (65,536² int64 = 32 GiB) does not fit. So ``update`` stores the
sparse firing pattern on disk (a temporary directory; 20 bytes per firing entry), and
``result`` makes one blockwise pass over it: for a block B of latents, the exact counts
C[B, :] = A[:, B]ᵀ A (A: tokens × d_sae binary) are accumulated as a dense (|B|, d_sae) matrix from
the tokens on which a latent of B fires — each such entry expands into the token's row of firing
latents — then ranked and reduced to the top n. Memory: O(block · d_sae) for the block's dense
int32 counts (``block`` defaults to 2**24 entries: 64 MB), plus the block's distinct partner
pairs (scored sparsely, ~40 bytes each) and O(``PAIRS``) for the expansion; disk: 20 bytes per firing entry (N · L0). Work: Σ_tokens L0²,
what any exact method costs.

Writes ``cooccurrence.safetensors``: ``indices`` int64 [d_sae, n] (partners by Jaccard, best
first; −1 padding where a latent has fewer than n partners), ``count`` int64 (c_ij; 0 padding),
``jaccard`` float32, ``pmi`` float32 (0 padding); and ``cooccurrence.json`` (``n_tokens``,
``split``, ``n``, ``top_pairs``: the pairs with the highest Jaccard among the kept lists).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from sae_core import AnalysisContext, CodeConsumer, PassAnalysis, SAEError, filenames, firing, open_scratch, sparse_consumer
from sae_core.analyses.common import descriptive_side, option, save_json, save_safetensors

#: entries of the dense per-block count matrix (block · d_sae)
BLOCK_ENTRIES = 2**24
#: latent pairs expanded at once while counting a block
PAIRS = 2**22
#: pairs listed in cooccurrence.json
TOP_PAIRS = 50


class Cooccurrence:
    """Exact co-occurrence counts of latent pairs, reduced to each latent's top ``n_top`` partners.

    ``update(token, latent, n_tokens)``: the firing entries (nnz,) of a chunk of ``n_tokens``
    tokens (a latent fires on a token: ``token[e]`` and ``latent[e]``), token numbers unique
    within the pass and increasing from call to call; every entry of a token must come in the
    same call (a chunk of tokens, whole). ``result()`` -> dict of tensors on CPU (``indices``,
    ``count``, ``jaccard``, ``pmi``, [d_sae, n]; ``n_fired`` [d_sae]) and ``n_tokens``. Memory
    and disk: see the module docstring. ``close()`` (or the end of ``result()``) removes the
    temporary files.
    """

    def __init__(self, d_sae: int, n_top: int = 10, block: int | None = None, *, device: str | torch.device = "cpu",
                 tmp_dir: str | Path | None = None) -> None:
        self.d_sae = int(d_sae)
        self.n_top = max(0, min(int(n_top), self.d_sae - 1))
        self.block = int(block) if block else max(1, min(self.d_sae, BLOCK_ENTRIES // max(self.d_sae, 1)))
        self.device = torch.device(device)
        self.n_tokens = 0
        self.n_fired = torch.zeros(self.d_sae, dtype=torch.int64)  # (d_sae,) n_i
        self._tmp = tempfile.TemporaryDirectory(prefix="sae-cooccurrence-", dir=tmp_dir)
        root = Path(self._tmp.name)
        # the firing pattern: rows of firing latents per token (CSR, token order), and per chunk
        # the same entries by latent, each pointing at its token's row
        self._files = {name: open_scratch(root / name) for name in ("rows", "by_latent", "row_start", "row_len")}
        self._nnz = 0
        self._chunks: list[tuple[int, int]] = []  # (first entry, entries) of each update
        self._last_token = -1

    def update(self, token: torch.Tensor, latent: torch.Tensor, n_tokens: int) -> None:
        """Add a chunk: ``token``, ``latent`` (nnz,) int64 firing entries; ``n_tokens`` tokens."""
        if token.shape != latent.shape or token.dim() != 1:
            raise SAEError(f"Cooccurrence.update expects two (nnz,) tensors, got {tuple(token.shape)} and {tuple(latent.shape)}")
        if token.numel() == 0:
            self.n_tokens += int(n_tokens)
            return
        token, latent = token.long().cpu(), latent.long().cpu()
        if int(latent.min()) < 0 or int(latent.max()) >= self.d_sae:
            raise SAEError(f"Cooccurrence.update: latent ids must be in [0, {self.d_sae})")
        if int(token.min()) <= self._last_token:
            raise SAEError("Cooccurrence.update: token numbers must increase from one call to the next (each token's "
                           "firing entries in one call); number tokens with a running counter over the pass")
        key = torch.unique(token * self.d_sae + latent)  # (nnz,) sorted, deduplicated
        tok, lat = key // self.d_sae, key % self.d_sae
        self._last_token = int(tok[-1])
        self.n_tokens += int(n_tokens)
        self.n_fired += torch.bincount(lat, minlength=self.d_sae)
        _, local, per_token = torch.unique_consecutive(tok, return_inverse=True, return_counts=True)
        starts = torch.cumsum(per_token, 0) - per_token + self._nnz  # (tokens,) global offset of each row
        order = torch.argsort(lat, stable=True)  # entries by latent
        self._write("rows", lat.to(torch.int32))
        self._write("by_latent", lat[order].to(torch.int32))
        self._write("row_start", starts[local][order])
        self._write("row_len", per_token[local][order].to(torch.int32))
        self._chunks.append((self._nnz, len(key)))
        self._nnz += len(key)

    def update_codes(self, codes: torch.Tensor) -> None:
        """Convenience: add a chunk of codes (tokens, d_sae) of consecutive tokens (a latent fires
        where its code is non-zero, :func:`sae_core.firing_rule`)."""
        tok, lat = firing(codes).nonzero(as_tuple=True)
        self.update(tok + self._last_token + 1, lat, codes.shape[0])

    def _write(self, name: str, values: torch.Tensor) -> None:
        self._files[name].write(values.numpy().tobytes())

    def _maps(self) -> dict[str, np.ndarray]:
        for f in self._files.values():
            f.flush()
        root = Path(self._tmp.name)
        dtypes = {"rows": np.int32, "by_latent": np.int32, "row_start": np.int64, "row_len": np.int32}
        return {name: (np.memmap(root / name, dtype=dt, mode="r") if self._nnz else np.zeros(0, dtype=dt))
                for name, dt in dtypes.items()}

    def _block_counts(self, maps: dict[str, np.ndarray], lo: int, hi: int) -> torch.Tensor:
        """(hi - lo, d_sae) exact c_ij (int32, int64 past 2**31 tokens) for i in [lo, hi), every j (c_ii = n_i)."""
        dev, d = self.device, self.d_sae
        dtype = torch.int32 if self.n_tokens < 2**31 else torch.int64  # a count is at most the tokens read
        counts = torch.zeros((hi - lo) * d, dtype=dtype, device=dev)
        for first, size in self._chunks:
            by_latent = maps["by_latent"][first : first + size]
            a, b = np.searchsorted(by_latent, [lo, hi])  # this chunk's entries of the block
            lens_all = np.asarray(maps["row_len"][first + a : first + b], dtype=np.int64)  # (e,) each token's row length
            ends = np.cumsum(lens_all)  # pairs expanded up to each entry
            p = 0
            while p < len(lens_all):  # pieces of at most PAIRS expanded pairs (one entry at least)
                done = int(ends[p - 1]) if p else 0
                q = max(p + 1, int(np.searchsorted(ends, done + PAIRS, side="right")))
                sl = slice(first + int(a) + p, first + int(a) + q)
                lens = torch.from_numpy(lens_all[p:q])  # (e,)
                row = torch.from_numpy(maps["by_latent"][sl].astype(np.int64)) - lo  # (e,) the block's latent
                start = torch.from_numpy(np.array(maps["row_start"][sl]))  # (e,) its token's row
                total = int(lens.sum())
                offset = torch.arange(total) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)  # (pairs,)
                where = (torch.repeat_interleave(start, lens) + offset).numpy()
                cols = torch.from_numpy(maps["rows"][where].astype(np.int64))  # (pairs,) partner latents
                flat = torch.repeat_interleave(row, lens) * d + cols
                counts.index_add_(0, flat.to(dev), torch.ones(total, dtype=dtype, device=dev))
                p = q
        return counts.view(hi - lo, d)

    def result(self) -> dict[str, Any]:
        """The top ``n_top`` partners of every latent (see the class docstring); removes the
        temporary files."""
        d, n, dev = self.d_sae, self.n_top, self.device
        maps = self._maps()
        indices = torch.full((d, n), -1, dtype=torch.int64)
        count = torch.zeros(d, n, dtype=torch.int64)
        jaccard = torch.zeros(d, n, dtype=torch.float32)
        pmi = torch.zeros(d, n, dtype=torch.float32)
        n_all = self.n_fired.to(dev)  # (d,)
        for lo in range(0, d, self.block):
            hi = min(lo + self.block, d)
            c = self._block_counts(maps, lo, hi)  # (b, d)
            rows = torch.arange(hi - lo, device=dev)
            c[rows, rows + lo] = 0  # a latent is not its own partner
            i, j = c.nonzero(as_tuple=True)  # (pairs,) the block's partners, row-major; scored sparsely
            cnt = c[i, j].long()
            ni, nj = n_all[lo + i], n_all[j]
            jac = cnt.double() / (ni + nj - cnt).double()
            # grouped by row, best first within it (jac in (0, 1]), ties: lower latent id first (stable)
            order = torch.argsort(i.double() * 2 - jac, stable=True)
            i, j, cnt, jac, ni, nj = i[order], j[order], cnt[order], jac[order], ni[order], nj[order]
            rank = torch.arange(len(i), device=dev) - torch.searchsorted(i, i)  # (pairs,) place within its row
            top = rank < n
            i, r = (i[top] + lo).cpu(), rank[top].cpu()
            indices[i, r] = j[top].cpu()
            count[i, r] = cnt[top].cpu()
            jaccard[i, r] = jac[top].float().cpu()
            pmi[i, r] = torch.log(cnt[top].double() * self.n_tokens / (ni[top].double() * nj[top].double())).float().cpu()
        self.close()
        return {"indices": indices, "count": count, "jaccard": jaccard, "pmi": pmi, "n_fired": self.n_fired.clone(),
                "n_tokens": self.n_tokens}

    def close(self) -> None:
        """Remove the temporary files (idempotent)."""
        for f in self._files.values():
            f.close()
        self._tmp.cleanup()


def top_pairs(result: dict[str, Any], n_pairs: int = TOP_PAIRS) -> list[dict[str, Any]]:
    """The ``n_pairs`` unordered pairs with the highest Jaccard (then count) among the kept lists."""
    idx, cnt, jac, pmi = (np.asarray(result[k]) for k in ("indices", "count", "jaccard", "pmi"))
    i = np.broadcast_to(np.arange(idx.shape[0])[:, None], idx.shape)
    keep = idx > i  # each pair once (i < j), padding (-1) dropped
    i, j, c, s, p = i[keep], idx[keep], cnt[keep], jac[keep], pmi[keep]
    order = np.lexsort((j, i, -c, -s))[:n_pairs]  # Jaccard, then count, descending
    return [{"i": int(i[e]), "j": int(j[e]), "count": int(c[e]), "jaccard": float(s[e]), "pmi": float(p[e])}
            for e in order]


class CooccurrenceAnalysis(PassAnalysis):
    """Which latents fire on the same tokens: exact pair counts, Jaccard and PMI, top n per latent."""

    name: ClassVar[str] = "cooccurrence"
    options: ClassVar[tuple[str, ...]] = ("cooccurrence_n", "cooccurrence_block", "split", "max_tokens")

    def consumer(self, ctx: AnalysisContext) -> CodeConsumer:
        """Fed by the shared pass (the same read of the cache as the statistics and examples)."""

        n = option(ctx, "cooccurrence_n", 10, int, "positive")
        block = option(ctx, "cooccurrence_block", 0, int) or None
        acc = Cooccurrence(ctx.sae.d_sae, n, block, device=ctx.device)
        split = descriptive_side(ctx)

        def finish(result: dict[str, Any]) -> dict[str, Any]:
            try:
                return write_cooccurrence(ctx.checkpoint, result, split)
            finally:
                acc.close()

        return sparse_consumer(acc, finish)


def write_cooccurrence(checkpoint: str | Path, result: dict[str, Any], split: str) -> dict[str, Any]:
    """Write ``cooccurrence.safetensors`` and ``cooccurrence.json`` from ``Cooccurrence.result()``
    (``split``: which rows were read); returns the analysis summary. A shared pass over the cache
    that feeds the accumulator itself ends with this."""
    checkpoint = Path(checkpoint)
    save_safetensors(checkpoint / filenames.COOCCURRENCE_FILE, {k: result[k] for k in ("indices", "count", "jaccard", "pmi")})
    pairs = top_pairs(result)
    n = int(result["indices"].shape[1])
    save_json(checkpoint / filenames.COOCCURRENCE_META_FILE, {
        "n_tokens": result["n_tokens"], "split": split, "n": n, "ranked_by": "jaccard", "top_pairs": pairs,
    })
    return {"n_tokens": result["n_tokens"], "n": n, "max_jaccard": pairs[0]["jaccard"] if pairs else None}
