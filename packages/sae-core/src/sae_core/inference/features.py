"""Which features fire on a user's own input: per token / per patch, and image heatmaps.

The model runs only up to the SAE's layer (record mode, no output); the values are the SAE's
``encode`` of the model's activations there, on the tokens the SAE reads (as in training: no
padding, no BOS/CLS/SEP unless the cache kept them; a ViT SAE only its token kind).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sae_core.firing_rule import firing, magnitude
from sae_core.inference.heatmap import heatmap_overlay
from sae_core.inference.hook import SAEHook
from sae_core.io import atomic_path

if TYPE_CHECKING:
    from sae_core.checkpoint.sae import SAE
    from sae_core.inference.model import HookedModel, RunResult


def record(model: HookedModel, sae: SAE, examples: list[Any]) -> tuple[RunResult, SAEHook]:
    """Run ``examples`` up to the SAE's layer and record its features."""
    hook = SAEHook(sae)
    return model.run(examples, hook, output=False), hook


def token_table(result: RunResult, hook: SAEHook, top: int, grid: list[int] | None = None) -> list[dict[str, Any]]:
    """One entry per recorded token, in input order: where it is, what it is, and its ``top``
    features as [[id, value], ...] (only features that fired, strongest first: by magnitude)."""
    acts = result.features.get(hook.name)
    if acts is None:
        return []
    inputs = result.inputs
    values, ids = acts.top(top)  # (M, top)
    kinds = inputs.kinds
    first_patch = kinds.index("patch") if "patch" in kinds else None
    rows: list[dict[str, Any]] = []
    for j, (r, p) in enumerate(zip(acts.rows.tolist(), acts.positions.tolist(), strict=True)):
        entry: dict[str, Any] = {"example": int(inputs.example[r]), "row": r, "position": p, "kind": kinds[p]}
        if inputs.positions is not None:
            entry["offset"] = int(inputs.positions[r, p])
        if inputs.labels is not None:
            entry["token"] = inputs.labels[r][p]
        if kinds[p] == "patch" and first_patch is not None and grid:
            i = p - first_patch
            entry["patch"] = [i // grid[1], i % grid[1]]
        entry["features"] = [[int(f), float(v)] for v, f in zip(values[j].tolist(), ids[j].tolist(), strict=True)
                             if firing(v)]
        rows.append(entry)
    return rows


def top_features(result: RunResult, hook: SAEHook, n: int, row: int | None = None) -> list[tuple[int, float]]:
    """The ``n`` features with the strongest activation (by magnitude) on any recorded token (of
    batch row ``row``, or of all rows: a long text spans several windows), with that activation
    (signed, for architectures with signed codes)."""
    acts = result.features.get(hook.name)
    if acts is None:
        return []
    dense = acts.dense() if row is None else acts.dense()[acts.rows == row]  # (tokens, d_sae)
    if not len(dense):
        return []
    at = magnitude(dense).argmax(0)  # (d_sae,): the token where each feature is strongest
    peak = dense.gather(0, at[None, :])[0]  # (d_sae,) signed
    ids = torch.topk(magnitude(peak), min(n, len(peak))).indices
    return [(int(i), float(peak[i])) for i in ids.tolist() if firing(float(peak[i]))]


def write_heatmaps(result: RunResult, hook: SAEHook, features: list[tuple[int, float]], extra: dict[str, Any],
                   out: Path, row: int = 0) -> list[Path]:
    """``feature-<id>.png`` per feature: its per-patch activation over image ``row``."""

    acts = result.features[hook.name]
    inputs = result.inputs
    patch_pos = np.array([i for i, k in enumerate(inputs.kinds) if k == "patch"])
    grid = acts.grid(*inputs.shape)[row]  # (T, d_sae)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fid, _ in features:
        image = heatmap_overlay(inputs.images[row], grid[patch_pos, fid].numpy(), extra)
        path = out / f"feature-{fid}.png"
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        paths.append(path)
    return paths
