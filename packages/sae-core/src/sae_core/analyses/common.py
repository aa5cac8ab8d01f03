"""What every analysis needs: the SAE's inputs streamed from its cache, in order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from sae_core.protocols.analysis import AnalysisContext


def layer_and_positions(ctx: AnalysisContext) -> tuple[int, np.ndarray]:
    """The cache layer the SAE was trained on and the token positions it saw."""
    source = ctx.sae.cfg.get("source", {})
    layer = source.get("layer", source.get("layer_index", 0))
    return ctx.reader.layer_index(layer), ctx.reader.positions(source.get("tokens", "all"))


def row_range(ctx: AnalysisContext) -> tuple[int, int]:
    n = ctx.reader.n_examples
    return 0, n if ctx.max_examples is None else min(n, ctx.max_examples)


def option(ctx: AnalysisContext, name: str, default: Any, cast: Callable[[Any], Any], check: str = "") -> Any:
    """``--option name=VALUE`` converted with ``cast``; a bad value is a one-line SAEError.

    ``check`` is ``"positive"`` (> 0) or ``"fraction"`` (in (0, 1]) when the value is bounded.
    """
    from sae_core.errors import SAEError

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


def heldout_rows(ctx: AnalysisContext) -> tuple[int, int]:
    """The held-out rows of the analysed rows (:func:`sae_core.inference.heldout.heldout_rows`:
    the last ``heldout_frac``, default 10%, at least one)."""
    from sae_core.inference.heldout import heldout_rows as rows

    _, hi = row_range(ctx)
    return rows(ctx.reader, frac=option(ctx, "heldout_frac", 0.1, float, "fraction"), limit=hi)


def iter_rows(ctx: AnalysisContext, start: int, stop: int, rows_per_chunk: int) -> Iterator[tuple[int, torch.Tensor, np.ndarray]]:
    """(first row, acts (n, T, d) of the SAE's layer, index records (n, T)) in row order."""
    li, _ = layer_and_positions(ctx)
    for lo in range(start, stop, rows_per_chunk):
        hi = min(stop, lo + rows_per_chunk)
        acts, index = ctx.reader.read_examples(lo, hi, layers=[li])
        yield lo, acts[:, 0].to(ctx.device), index


def selected_mask(ctx: AnalysisContext, index: np.ndarray) -> torch.Tensor:
    """(n, T) bool: tokens the SAE is meant for (valid, and of its token kind)."""
    _, positions = layer_and_positions(ctx)
    keep = np.zeros(index.shape, dtype=bool)
    keep[:, positions] = True
    return torch.from_numpy(keep & index["valid"].astype(bool)).to(ctx.device)


def rows_per_chunk(ctx: AnalysisContext) -> int:
    return max(1, ctx.batch_size // ctx.reader.meta.tokens_per_example)


def encode_tokens(ctx: AnalysisContext, x: torch.Tensor) -> torch.Tensor:
    """(n, T, d) -> (n, T, d_sae) latents."""
    n, t, d = x.shape
    with torch.no_grad():
        return ctx.sae.encode(x.reshape(n * t, d)).view(n, t, -1)


def save_safetensors(path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    """Durably write an analysis's tensors (see :mod:`sae_core.io`)."""
    from safetensors.torch import save_file

    from sae_core.io import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)


def save_json(path, doc) -> None:
    """Durably write an analysis's JSON result."""
    from sae_core.io import atomic_write_json

    atomic_write_json(path, doc, default=float)
