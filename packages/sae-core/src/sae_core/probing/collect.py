"""The items a probe scores, read from the cache: sparse latent scores and their labels.

Example labels: one item per labelled example seen in the rows; its score for a latent is the
largest |code| over the example's tokens the SAE reads, over all of the example's rows (a text
document may span several windows). Token labels: one item per labelled token the SAE reads,
scored by its |code|. Only non-zero scores are kept (SAE codes are sparse): memory is O(nnz).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sae_core.analyses.common import encode_tokens, iter_rows, rows_per_chunk, selected_mask
from sae_core.firing_rule import magnitude
from sae_core.probing.labels import ExampleLabels, Labels
from sae_core.protocols.analysis import AnalysisContext


@dataclass
class Items:
    """``value[k]`` is item ``item[k]``'s score on latent ``latent[k]`` (all other scores are 0)."""

    item: torch.Tensor  # (nnz,) int64
    latent: torch.Tensor  # (nnz,) int64
    value: torch.Tensor  # (nnz,) float32, > 0
    y: torch.Tensor  # (N, n_labels) bool
    example: np.ndarray  # (N,) int64 dataset example id of each item
    n_rows: int  # cache rows read

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


def collect(ctx: AnalysisContext, labels: Labels, rows: np.ndarray, max_tokens: int) -> Items:
    """Score the labelled examples (or tokens, at most ``max_tokens``) of ``rows``."""
    if isinstance(labels, ExampleLabels):
        return _examples(ctx, labels, rows)
    return _tokens(ctx, labels, rows, max_tokens)


def _examples(ctx: AnalysisContext, labels: ExampleLabels, rows: np.ndarray) -> Items:
    d_sae = ctx.sae.d_sae
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    seen = np.zeros(len(labels.examples), dtype=bool)
    for _, x, index in iter_rows(ctx, rows, rows_per_chunk(ctx)):
        li = labels.rows_of(index["example"][:, 0].astype(np.int64))  # (n,) label row, -1: unlabelled
        take = li >= 0
        if not take.any():
            continue
        seen[li[take]] = True
        keep = selected_mask(ctx, index)  # (n, T)
        score = (magnitude(encode_tokens(ctx, x)) * keep[..., None]).amax(dim=1)  # (n, d_sae)
        score = score[torch.from_numpy(take).to(score.device)]
        r, lat = score.nonzero(as_tuple=True)
        item = torch.from_numpy(li[take]).to(score.device)[r]
        parts.append((item.cpu(), lat.cpu(), score[r, lat].float().cpu()))
    item, lat, val = (torch.cat(p) for p in zip(*parts, strict=True)) if parts else (
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    # an example over several rows: keep its maximum per latent
    key = item * d_sae + lat
    uniq, inv = torch.unique(key, return_inverse=True)
    best = torch.zeros(len(uniq)).scatter_reduce_(0, inv, val, reduce="amax")
    item, lat = uniq // d_sae, uniq % d_sae
    # renumber the items: only the labelled examples that occur in the rows
    order = np.flatnonzero(seen)
    new = np.full(len(labels.examples), -1, dtype=np.int64)
    new[order] = np.arange(len(order))
    item = torch.from_numpy(new)[item]
    return Items(item=item, latent=lat, value=best, y=torch.from_numpy(labels.y[order]),
                 example=labels.examples[order], n_rows=len(rows))


def _tokens(ctx: AnalysisContext, labels: Labels, rows: np.ndarray, max_tokens: int) -> Items:
    items, lats, vals, ys, exs = [], [], [], [], []
    n_items = 0
    n_rows = 0
    for chunk, x, index in iter_rows(ctx, rows, rows_per_chunk(ctx)):
        keep = selected_mask(ctx, index).cpu().numpy() & labels.labelled(index)  # (n, T)
        n_rows += len(chunk)
        if not keep.any():
            continue
        yk = labels.labels_of(index)[keep]  # (m, n_labels)
        f = magnitude(encode_tokens(ctx, x))[torch.from_numpy(keep).to(x.device)]  # (m, d_sae)
        room = max_tokens - n_items
        if len(yk) > room:
            yk, f, keep_ex = yk[:room], f[:room], index["example"][keep][:room]
        else:
            keep_ex = index["example"][keep]
        tok, lat = f.nonzero(as_tuple=True)
        items.append((tok + n_items).cpu())
        lats.append(lat.cpu())
        vals.append(f[tok, lat].float().cpu())
        ys.append(torch.from_numpy(yk))
        exs.append(keep_ex.astype(np.int64))
        n_items += len(yk)
        if n_items >= max_tokens:
            break
    if not ys:
        return Items(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0),
                     torch.zeros(0, len(labels.names), dtype=torch.bool), np.zeros(0, dtype=np.int64), n_rows)
    return Items(item=torch.cat(items), latent=torch.cat(lats), value=torch.cat(vals), y=torch.cat(ys),
                 example=np.concatenate(exs), n_rows=n_rows)
