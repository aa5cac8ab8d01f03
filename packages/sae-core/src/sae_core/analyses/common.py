"""What every analysis needs: the SAE's inputs streamed from its cache, in order.

A transcoder's *input* is ``source.layer`` (its codes, feature statistics and top examples are
of that layer) and its *target* ``source.layer_out`` (what reconstruction metrics compare
against): :func:`target_layer` and :func:`iter_io_rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sae_core import HELDOUT_FRAC as DEFAULT_FRAC
from sae_core import select_rows
from sae_core.checkpoint.weights import save_weights
from sae_core.errors import SAEError
from sae_core.inference.heldout import read_index, runs
from sae_core.inference.heldout import sae_split as split_of
from sae_core.io import atomic_write_json

if TYPE_CHECKING:  # annotations only: AnalysisContext's methods call these helpers
    from sae_core.protocols.analysis import AnalysisContext


def layer_and_positions(ctx: AnalysisContext) -> tuple[int, np.ndarray]:
    """The cache layer the SAE was trained on (a transcoder's input) and the token positions it saw."""
    source = ctx.sae.cfg.source
    layer = source.layer if source.layer is not None else (source.layer_index or 0)
    return ctx.reader.layer_index(layer), ctx.reader.positions(source.tokens)


def target_layer(ctx: AnalysisContext) -> int | None:
    """The cache layer a transcoder reconstructs (None for SAEs, which reconstruct their input)."""

    cfg = ctx.sae.cfg
    if not cfg.is_transcoder:
        return None
    source = cfg.source
    layer = source.layer_out if source.layer_out is not None else source.layer_out_index
    if layer is None:
        raise SAEError(f"transcoder {ctx.checkpoint} does not record its target layer (cfg.json source.layer_out); "
                       "analyse it with a cfg.json that names it")
    return ctx.reader.layer_index(layer)


def sae_split(ctx: AnalysisContext) -> Any:
    """The validation split the SAE was trained with (its cfg.json ``val``), or None."""

    return split_of(ctx.sae.cfg)


def analysis_rows(ctx: AnalysisContext, legacy: str = "all") -> np.ndarray:
    """Cache rows the metrics (reconstruction, downstream) read (ascending), chosen by
    ``--option split=`` (:func:`sae_core.inference.heldout.select_rows`, shared with ``sae ablate``);
    the descriptive analyses read :func:`descriptive_rows` instead:

    - ``val`` (default): the SAE's validation examples — whole examples its training never read;
    - ``all``: every row; ``tail``: the last ``heldout_frac`` (10%) of rows.

    SAEs trained without a validation split (older runs, ``--val-fraction 0``) default to
    ``legacy``: ``all`` for the descriptive analyses, ``tail`` for the metrics, as before. At most
    ``--max-examples`` rows are read (the first ones of the selection).
    """

    split = sae_split(ctx)
    side = str(option(ctx, "split", "val" if split is not None else legacy, str))
    frac = option(ctx, "heldout_frac", DEFAULT_FRAC, float, "fraction") if side == "tail" else DEFAULT_FRAC
    rows = select_rows(ctx.reader, split, side, frac=frac, what=f"SAE {ctx.checkpoint}")
    if ctx.max_examples is not None:
        rows = rows[: ctx.max_examples]
    return rows


MAX_TOKENS = 2_000_000  # descriptive analyses: tokens read by default (--option max_tokens=)
FEW_TOKENS = 20_000  # fewer analysed tokens than this: `sae analyze` warns that statistics are thin


def descriptive_side(ctx: AnalysisContext) -> str:
    """Which rows the descriptive analyses (statistics, examples, the activation database) read:
    ``--option split=``, default ``all`` (every row, up to the token budget)."""
    return str(option(ctx, "split", "all", str))


def descriptive_rows(ctx: AnalysisContext, positions: np.ndarray | None = None) -> np.ndarray:
    """Rows the descriptive analyses read (ascending): those of :func:`descriptive_side`, the
    first ones holding at most ``--option max_tokens=`` (2,000,000) tokens the SAE reads (valid
    tokens at ``positions``, default the SAE's token kind), at most ``--max-examples`` rows.

    Why all rows: an SAE's validation split is a few percent of the cache (19 documents in the
    quickstart), too few to see rare latents fire; descriptive numbers need no held-out data.
    """

    side = descriptive_side(ctx)
    frac = option(ctx, "heldout_frac", DEFAULT_FRAC, float, "fraction") if side == "tail" else DEFAULT_FRAC
    rows = select_rows(ctx.reader, sae_split(ctx), side, frac=frac, what=f"SAE {ctx.checkpoint}")
    if ctx.max_examples is not None:
        rows = rows[: ctx.max_examples]
    if positions is None:
        positions = layer_and_positions(ctx)[1]
    return rows_within_budget(ctx.reader, rows, positions, option(ctx, "max_tokens", MAX_TOKENS, int, "positive"))


def rows_within_budget(reader: Any, rows: np.ndarray, positions: np.ndarray, max_tokens: int,
                       chunk: int = 1024) -> np.ndarray:
    """The longest prefix of ``rows`` whose valid tokens at ``positions`` number at most
    ``max_tokens`` (at least one row); reads index records from the front, only as far as needed."""

    allowed = np.zeros(reader.meta.tokens_per_example, dtype=bool)
    allowed[np.asarray(positions, dtype=np.int64)] = True
    have = 0
    for lo in range(0, len(rows), chunk):
        per_row = (read_index(reader, rows[lo : lo + chunk])["valid"].astype(bool) & allowed).sum(1)  # (m,)
        cum = have + np.cumsum(per_row)
        if cum[-1] > max_tokens:
            return rows[: max(1, lo + int(np.searchsorted(cum, max_tokens, side="right")))]
        have = int(cum[-1])
    return rows


def option(ctx: AnalysisContext, name: str, default: Any, cast: Callable[[Any], Any], check: str = "") -> Any:
    """``--option name=VALUE`` converted with ``cast``; a bad value is a one-line SAEError.

    ``check`` is ``"positive"`` (> 0) or ``"fraction"`` (in (0, 1]) when the value is bounded.
    """

    raw = ctx.options.get(name, default)
    try:
        value = cast(raw)
    except (TypeError, ValueError):
        raise SAEError(f"--option {name}= expects {cast.__name__}, got {raw!r}") from None
    if check == "positive" and not value > 0:
        raise SAEError(f"--option {name}= must be > 0, got {raw!r}")
    if check == "fraction" and not 0 < value <= 1:
        raise SAEError(f"--option {name}= must be in (0, 1], got {raw!r}")
    return value


def heldout_rows(ctx: AnalysisContext) -> np.ndarray:
    """Rows the metrics analyses (reconstruction, downstream) read: see :func:`analysis_rows`."""
    return analysis_rows(ctx, legacy="tail")


def read_rows(ctx: AnalysisContext, rows: np.ndarray, layer: int | list[int]) -> tuple[torch.Tensor, np.ndarray]:
    """Acts ``(n, len(layers), T, d)`` and index ``(n, T)`` of the given ascending rows (contiguous
    runs read at once); ``layer``: one layer index or several."""

    layers = layer if isinstance(layer, list) else [layer]
    parts = [ctx.reader.read_examples(int(run[0]), int(run[-1]) + 1, layers=layers) for run in runs(rows)]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([a for a, _ in parts]), np.concatenate([i for _, i in parts])


def iter_rows(ctx: AnalysisContext, rows: np.ndarray, rows_per_chunk: int) -> Iterator[tuple[np.ndarray, torch.Tensor, np.ndarray]]:
    """(row numbers (n,), acts (n, T, d) of the SAE's layer, index records (n, T)) in row order."""
    li, _ = layer_and_positions(ctx)
    for lo in range(0, len(rows), rows_per_chunk):
        chunk = rows[lo : lo + rows_per_chunk]
        acts, index = read_rows(ctx, chunk, li)
        yield chunk, acts[:, 0].to(ctx.device), index


def iter_io_rows(ctx: AnalysisContext, rows: np.ndarray, rows_per_chunk: int
                 ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, np.ndarray]]:
    """(row numbers, input acts (n, T, d_in), target acts (n, T, d_out), index) in row order: the
    target is a transcoder's output layer, or the input itself (the same tensor) for SAEs."""
    li, _ = layer_and_positions(ctx)
    lo_ = target_layer(ctx)
    if lo_ is None:
        for chunk, x, index in iter_rows(ctx, rows, rows_per_chunk):
            yield chunk, x, x, index
        return
    for lo in range(0, len(rows), rows_per_chunk):
        chunk = rows[lo : lo + rows_per_chunk]
        acts, index = read_rows(ctx, chunk, [li, lo_])
        acts = acts.to(ctx.device)
        yield chunk, acts[:, 0], acts[:, 1], index


def selected_mask(ctx: AnalysisContext, index: np.ndarray) -> torch.Tensor:
    """(n, T) bool: tokens the SAE is meant for (valid, and of its token kind)."""
    _, positions = layer_and_positions(ctx)
    keep = np.zeros(index.shape, dtype=bool)
    keep[:, positions] = True
    return torch.from_numpy(keep & index["valid"].astype(bool)).to(ctx.device)


def rows_per_chunk(ctx: AnalysisContext) -> int:
    return max(1, ctx.batch_size // ctx.reader.meta.tokens_per_example)


def encode_tokens(ctx: AnalysisContext, x: torch.Tensor) -> torch.Tensor:
    """(n, T, d) -> (n, T, d_sae) codes (signed if the SAE's architecture says so: a latent fires
    where its code is non-zero, see :mod:`sae_core.firing_rule`)."""
    n, t, d = x.shape
    with torch.no_grad():
        return ctx.sae.encode(x.reshape(n * t, d)).view(n, t, -1)


def save_safetensors(path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    """Durably write an analysis's tensors (see :mod:`sae_core.io`)."""

    save_weights(path, tensors, metadata=meta)


def save_json(path, doc) -> None:
    """Durably write an analysis's JSON result."""

    atomic_write_json(path, doc, default=float)
