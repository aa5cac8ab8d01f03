"""The shared analysis pass: read each chunk of a cache once, encode it once per SAE, and hand the
codes to every analysis that needs them.

Before, each analysis (feature statistics, top examples, ...) re-read the cache and re-encoded
it for every SAE. Here the SAEs of a run that read the same cache, layer and rows form a
*group*; for each chunk of the group's rows the activations are read once, each SAE encodes them
once, and each :class:`~sae_core.protocols.analysis.CodeConsumer` of that SAE gets a
:class:`~sae_core.protocols.analysis.CodeChunk` (dense codes and sparse triplets). Memory is one
chunk of activations, one SAE's codes of it, and what the consumers keep (bounded by design:
running top-k, histograms, the database's write buffer), never the corpus.

Rows: the descriptive default, every row up to ``--option max_tokens=`` tokens
(:func:`sae_core.analyses.common.descriptive_rows`), cut on the valid tokens of all the token
kinds the group's SAEs read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sae_core.analyses.common import (
    descriptive_rows,
    descriptive_side,
    encode_tokens,
    layer_and_positions,
    option,
    read_rows,
    sae_split,
    selected_mask,
)
from sae_core.plugin_calls import guarded
from sae_core.protocols.codes import CodeChunk, CodeConsumer

if TYPE_CHECKING:  # annotations only: the protocol's PassAnalysis.run runs this pass
    from sae_core.protocols.analysis import AnalysisContext, PassAnalysis

CHUNK_VALUES = 2**24  # dense codes per chunk (64 MB of float32): bounds memory, amortises top-k merges


class _Sparse:
    """Adapter: an accumulator with ``update(token, latent, n_tokens)`` / ``result()``."""

    def __init__(self, acc: Any, finish: Callable[[Any], Any] | None) -> None:
        self.acc, self._finish = acc, finish

    def update(self, chunk: CodeChunk) -> None:
        self.acc.update(chunk.token, chunk.latent, chunk.n_tokens)

    def finish(self) -> Any:
        result = self.acc.result()
        return self._finish(result) if self._finish is not None else result


def bincount(x: torch.Tensor, minlength: int) -> torch.Tensor:
    """``torch.bincount`` (int64), through numpy on CPU tensors (an order of magnitude faster there)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.bincount(x.numpy(), minlength=minlength).astype(np.int64))
    return torch.bincount(x, minlength=minlength)


def sparse_consumer(acc: Any, finish: Callable[[Any], Any] | None = None) -> CodeConsumer:
    """Plug an accumulator of sparse firings into the pass: ``acc.update(token (nnz,) int64,
    latent (nnz,) int64, n_tokens)`` per chunk, then ``finish(acc.result())`` (e.g. write a file
    and return a summary; default: the result itself)::

        class CoOccurrence(PassAnalysis):
            name = "cooccurrence"
            def consumer(self, ctx):
                return sparse_consumer(Cooccurrence(ctx.sae.d_sae), lambda r: write(ctx, r))
    """
    return _Sparse(acc, finish)


def _group_key(ctx: AnalysisContext) -> tuple[Any, ...]:
    """SAEs with equal keys read exactly the same rows of the same cache layer."""
    li, _ = layer_and_positions(ctx)
    side = descriptive_side(ctx)
    split = sae_split(ctx) if side == "val" else None
    return (str(ctx.reader.path), id(ctx.reader), li, side, None if split is None else (split.fraction, split.seed),
            ctx.options.get("heldout_frac"), ctx.options.get("max_tokens"), ctx.max_examples, ctx.device)


def chunk_rows(ctxs: Sequence[AnalysisContext]) -> int:
    """Rows per chunk: at most :data:`CHUNK_VALUES` dense codes for the widest SAE, at most 256 rows."""
    t = ctxs[0].reader.meta.tokens_per_example
    widest = max(c.sae.d_sae for c in ctxs)
    return max(1, min(256, CHUNK_VALUES // max(t * widest, 1)))


def run_shared_pass(
    jobs: Sequence[tuple[AnalysisContext, Sequence[PassAnalysis]]],
    on_chunk: Callable[[int], None] | None = None,
) -> dict[Path, dict[str, Any]]:
    """Run the pass analyses of every (context, analyses) job; returns
    {checkpoint: {analysis name: summary}}. Jobs reading the same rows share one pass.
    ``on_chunk(rows)`` is called after each chunk (progress)."""
    groups: dict[tuple[Any, ...], list[tuple[AnalysisContext, Sequence[PassAnalysis]]]] = {}
    for ctx, analyses in jobs:
        if analyses:
            groups.setdefault(_group_key(ctx), []).append((ctx, analyses))
    out: dict[Path, dict[str, Any]] = {}
    for group in groups.values():
        out.update(_run_group(group, on_chunk))
    return out


def _run_group(group: list[tuple[AnalysisContext, Sequence[PassAnalysis]]],
               on_chunk: Callable[[int], None] | None) -> dict[Path, dict[str, Any]]:
    ctxs = [ctx for ctx, _ in group]
    first = ctxs[0]
    li, _ = layer_and_positions(first)
    union = np.unique(np.concatenate([layer_and_positions(c)[1] for c in ctxs]))
    rows = descriptive_rows(first, union)
    for ctx in ctxs:
        option(ctx, "max_tokens", 1, int, "positive")  # a bad value fails before any work
    consumers: list[list[tuple[str, CodeConsumer]]] = []
    offsets = [0] * len(ctxs)  # global token number of each SAE's next selected token
    step = chunk_rows(ctxs)
    try:
        for ctx, analyses in group:  # inside the try: a consumer that fails to start aborts the others
            consumers.append([])
            for a in analyses:
                with guarded("analysis", a.name, "consumer(ctx)", "a consumer with update(chunk) and finish()"):
                    consumers[-1].append((a.name, a.consumer(ctx)))
        for lo in range(0, len(rows), step):
            row_ids = rows[lo : lo + step]
            acts, index = read_rows(first, row_ids, li)
            x = acts[:, 0].to(first.device)  # (n, T, d_in), read once for every SAE of the group
            for s, ctx in enumerate(ctxs):
                chunk = _encode_chunk(ctx, row_ids, x, index, offsets[s])
                offsets[s] += chunk.n_tokens
                for _, consumer in consumers[s]:
                    consumer.update(chunk)
                del chunk
            if on_chunk is not None:
                on_chunk(len(row_ids))
        return {ctx.checkpoint: {name: c.finish() for name, c in consumers[s]} for s, ctx in enumerate(ctxs)}
    except BaseException:
        for per_sae in consumers:
            for _, c in per_sae:
                abort = getattr(c, "abort", None)
                if abort is not None:
                    with contextlib.suppress(Exception):
                        abort()
        raise


def _encode_chunk(ctx: AnalysisContext, row_ids: np.ndarray, x: torch.Tensor, index: np.ndarray,
                  first_token: int) -> CodeChunk:
    keep = selected_mask(ctx, index)  # (n, T)
    codes = encode_tokens(ctx, x)  # (n, T, d_sae)
    if not bool(keep.all()):
        codes[~keep] = 0  # zero off the SAE's tokens (in place: no second dense copy)
    _, t, d_sae = codes.shape
    dense = codes.reshape(-1)  # (n * T * d_sae,)
    flat = dense.nonzero().squeeze(1)  # (nnz,) ascending: the firing rule, code != 0 (sae_core.firing_rule)
    value = dense[flat].float()  # (nnz,)
    small = flat.int() if dense.numel() < 2**31 else flat  # int32 division is ~10x faster on CPU than int64
    lat, cell = (small % d_sae).long(), small // d_sae  # cell = row * T + slot
    row, slot = (cell // t).long(), (cell % t).long()
    number = keep.flatten().cumsum(0) - 1  # (n * T,): token number of each kept (row, slot) in the chunk
    token = number[cell.long()] + first_token
    return CodeChunk(rows=row_ids, index=index, keep=keep, codes=codes, token=token, latent=lat, value=value,
                     row=row, slot=slot, n_tokens=int(keep.sum()), first_token=first_token)
