"""Each latent alone as a classifier of a label: average precision and best-threshold F1.

Scores are sparse: a latent is 0 on most items (tokens, or examples at their maximum over
tokens). The metrics are exact over *all* items anyway: the non-zero scores are sorted per latent,
and the zeros form one tied block at the bottom. Ties count as scikit-learn counts them (one
threshold per distinct score): AP = Σ_t (R_t − R_{t−1}) · P_t over the distinct thresholds t
(predict positive where score ≥ t), the last one being "every item" (precision = base rate).
F1 is maximised over the same thresholds; ties go to the highest threshold.
"""

from __future__ import annotations

import torch


def average_precision(scores: torch.Tensor, y: torch.Tensor) -> float:
    """AP of dense scores (n,) for binary labels y (n,), ties as scikit-learn's
    ``average_precision_score``; NaN when y has no positive."""
    y = y.double()
    p = float(y.sum())
    if p == 0:
        return float("nan")
    order = torch.argsort(scores, descending=True, stable=True)
    s, ys = scores[order], y[order]
    tp = ys.cumsum(0)  # (n,)
    end = torch.ones_like(s, dtype=torch.bool)
    end[:-1] = s[1:] != s[:-1]  # last item of each tied group
    tp_e = tp[end]
    pred_e = torch.arange(1, len(s) + 1, dtype=torch.float64, device=s.device)[end]
    gain = torch.diff(tp_e, prepend=tp_e.new_zeros(1))
    return float((gain / p * (tp_e / pred_e)).sum())


def latent_metrics(item: torch.Tensor, latent: torch.Tensor, value: torch.Tensor, y: torch.Tensor, d_sae: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per label and latent: AP, best F1 and its threshold, each ``(n_labels, d_sae)``.

    ``item``, ``latent``, ``value`` (nnz,): the non-zero scores (item index, latent, score > 0);
    every other (item, latent) scores 0. ``y`` (N, n_labels) bool: the labels of all N items
    (each label needs a positive). A threshold t means "positive where score ≥ t" (0: every item).
    """
    n_items, n_labels = y.shape
    dev = value.device
    order = torch.argsort(value, descending=True, stable=True)
    order = order[torch.argsort(latent[order], stable=True)]  # by latent, then score descending
    lat, val, it = latent[order], value[order].double(), item[order]
    nnz = len(val)
    counts = torch.bincount(lat, minlength=d_sae)  # (d_sae,) items where the latent fires
    seg_start = counts.cumsum(0) - counts  # (d_sae,)
    end = torch.ones(nnz, dtype=torch.bool, device=dev)
    end[:-1] = (lat[1:] != lat[:-1]) | (val[1:] != val[:-1])  # last entry of each tied group
    first_end = torch.ones(int(end.sum()), dtype=torch.bool, device=dev)  # first group end of its latent
    lat_e, val_e = lat[end], val[end]  # (groups,)
    first_end[1:] = lat_e[1:] != lat_e[:-1]
    pred_e = (torch.arange(nnz, device=dev) - seg_start[lat] + 1)[end].double()  # items predicted positive
    ap = torch.zeros(n_labels, d_sae, dtype=torch.float64, device=dev)
    f1 = torch.zeros_like(ap)
    thr = torch.zeros_like(ap)
    for j in range(n_labels):
        p = float(y[:, j].sum())
        yj = y[it, j].double()  # (nnz,)
        cum = yj.cumsum(0)
        base = torch.zeros(d_sae, dtype=torch.float64, device=dev)  # positives before each latent's segment
        has = counts > 0
        base[has] = (cum - yj)[seg_start[has]]
        tp_e = cum[end] - base[lat_e]  # (groups,) true positives down to each threshold
        prev = torch.where(first_end, torch.zeros_like(tp_e), tp_e.roll(1))
        ap[j].index_add_(0, lat_e, (tp_e - prev) / p * (tp_e / pred_e))
        tp_all = torch.zeros(d_sae, dtype=torch.float64, device=dev)
        tp_all.index_add_(0, lat_e, tp_e - prev)  # positives among the latent's non-zero items
        ap[j] += (p - tp_all) / n_items  # the zero block: recall to 1 at precision p / N
        f1_e = 2 * tp_e / (pred_e + p)
        best = torch.full((d_sae,), 2 * p / (n_items + p), dtype=torch.float64, device=dev)  # threshold 0: all
        best.scatter_reduce_(0, lat_e, f1_e, reduce="amax")
        at_best = f1_e == best[lat_e]
        t = torch.zeros(d_sae, dtype=torch.float64, device=dev)
        t.scatter_reduce_(0, lat_e[at_best], val_e[at_best], reduce="amax")
        f1[j], thr[j] = best, t
    return ap.float(), f1.float(), thr.float()
