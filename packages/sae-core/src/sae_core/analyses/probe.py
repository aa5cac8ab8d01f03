"""``probe`` (off by default; ``sae probe`` or ``sae analyze --only probe --option labels=...``):
how well the SAE's latents predict labels.

Per label and latent, the latent alone as a classifier (:mod:`sae_core.probing.ranking`):
average precision and best-threshold F1 with its threshold, over every labelled item (example
level for example labels — the latent's max |code| over the example's tokens/patches — token
level for token labels). Then a sparse linear probe on all latents
(:mod:`sae_core.probing.linear`): L1 logistic regression per label on a train/test split of the
examples (all tokens of one example on one side), features scaled by their RMS on the train
side, λ = ``probe_l1`` × λ_max (λ_max: the smallest λ that zeroes every weight).

Writes ``probe.safetensors`` (``ap``, ``f1``, ``threshold``, ``probe_weight`` [n_labels, d_sae],
``probe_bias`` [n_labels]; NaN rows for labels that could not be scored) and ``probe.json``.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from sae_core import HELDOUT_FRAC as DEFAULT_FRAC
from sae_core import (
    Analysis,
    AnalysisContext,
    ExampleSplit,
    SAEError,
    average_precision,
    filenames,
    fit_l1_logistic,
    lambda_max,
    latent_metrics,
    load_labels,
    predict_proba,
    select_rows,
)
from sae_core import collect_codes as collect
from sae_core.analyses.common import option, sae_split, save_json, save_safetensors

DEFAULTS = {"split": "all", "test_fraction": 0.25, "probe_seed": 0, "probe_l1": 0.05, "probe_top": 20,
            "probe_tokens": 200_000, "probe_iters": 1000}


class Probe(Analysis):
    """How well each latent (AP, best F1) and a sparse linear probe on all latents predict labels."""

    name: ClassVar[str] = "probe"
    options: ClassVar[tuple[str, ...]] = ("labels", "split", "heldout_frac", "test_fraction", "probe_seed", "probe_l1",
                                          "probe_top", "probe_tokens", "probe_iters")

    def __init__(self) -> None:
        self._labels: dict[tuple[str, str], Any] = {}  # (spec, cache) -> labels: read once for a run's SAEs

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        opts = _options(ctx)
        labels, items, side = self._items(ctx, opts.spec, opts.max_tokens)
        d_sae, names = ctx.sae.d_sae, labels.names
        pos, ok, skipped, (ap, f1, thr) = _latent_scores(items, names, d_sae)
        probe = _linear_probe(items, names, ok, opts.test_fraction, opts.seed, opts.l1, opts.top, opts.iters, d_sae)
        save_safetensors(ctx.checkpoint / filenames.PROBE_FILE, {
            "ap": ap, "f1": f1, "threshold": thr, "probe_weight": probe.pop("_weight"), "probe_bias": probe.pop("_bias"),
        })
        per_label = _per_label(names, pos, items.n, ok, (ap, f1, thr), opts.top, probe["per_label"])
        doc = {
            "labels": names, "level": labels.level, "source": labels.source, "split": side, "n_rows": items.n_rows,
            "n_items": items.n, "n_examples": len(np.unique(items.example)),
            "score": "max |code| over the example's tokens" if labels.level == "example" else "|code| of the token",
            "d_sae": d_sae, "top": opts.top, "per_label": per_label, "skipped_labels": skipped,
            "probe": {k: v for k, v in probe.items() if k != "per_label"},
        }
        save_json(ctx.checkpoint / filenames.PROBE_META_FILE, doc)
        best_ap = {n: per_label[n]["top_latents"][0] for n in names if "top_latents" in per_label[n]}
        return {"labels": len(names), "level": labels.level, "n_items": items.n,
                "best_latent": {n: {"latent": v["latent"], "ap": round(v["ap"], 4)} for n, v in best_ap.items()},
                "probe_test_ap": {n: (p or {}).get("test_ap") for n, p in probe["per_label"].items()}}

    def _items(self, ctx: AnalysisContext, spec: str, max_tokens: int) -> tuple[Any, Any, str]:
        """(labels, items, side): the labels (read once per labels spec and cache, for all of a
        run's SAEs) and the latents' scores on the labelled items of the rows probed; no labelled
        item in those rows is an error (wrong example ids, or a split without them)."""

        key = (str(spec), str(ctx.reader.path))
        if key not in self._labels:
            self._labels[key] = load_labels(str(spec), ctx.reader.meta, ctx.reader.path)
        labels = self._labels[key]
        rows, side = _rows(ctx)
        rows = _labelled_rows(ctx, rows, labels.examples)
        if ctx.max_examples is not None:
            rows = rows[: ctx.max_examples]
        items = collect(ctx, labels, rows, max_tokens)
        if items.n == 0:
            raise SAEError(f"none of the labelled {labels.level}s occurs in the {len(rows)} {side} rows read of cache "
                           f"{ctx.reader.path}; check the example ids of the labels (dataset ids, as in the cache "
                           "index) or use --option split=all")
        return labels, items, side


class _Options(NamedTuple):
    """The probe's ``--option`` values, checked."""

    spec: Any  # labels: dataset | PATH.csv | PATH.jsonl | regex:PATTERN
    test_fraction: float
    seed: int
    l1: float
    top: int
    max_tokens: int
    iters: int


def _options(ctx: AnalysisContext) -> _Options:
    """Read and check the options before anything is read or encoded: a bad value fails at once."""
    spec = ctx.options.get("labels")
    if not spec:
        raise SAEError("the probe analysis needs labels: --option labels=dataset|PATH.csv|PATH.jsonl|regex:PATTERN "
                       "(or use `sae probe CKPT --labels ...`)")
    test_fraction = option(ctx, "test_fraction", DEFAULTS["test_fraction"], float, "fraction")
    if test_fraction >= 1:
        raise SAEError("--option test_fraction= must be below 1 (the probe needs training examples)")
    seed = option(ctx, "probe_seed", DEFAULTS["probe_seed"], int)
    l1 = option(ctx, "probe_l1", DEFAULTS["probe_l1"], float)
    if not l1 >= 0:
        raise SAEError(f"--option probe_l1= must be >= 0, got {l1}")
    top = option(ctx, "probe_top", DEFAULTS["probe_top"], int, "positive")
    max_tokens = option(ctx, "probe_tokens", DEFAULTS["probe_tokens"], int, "positive")
    iters = option(ctx, "probe_iters", DEFAULTS["probe_iters"], int, "positive")
    return _Options(spec, test_fraction, seed, l1, top, max_tokens, iters)


def _latent_scores(items: Any, names: list[str], d_sae: int
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[str, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Each latent alone as a classifier of each label: (positives per label (n_labels,), which
    labels can be scored (some positive and some negative item: else nothing to rank), why the
    others cannot, (AP, best F1, its threshold) each (n_labels, d_sae), NaN rows for the others)."""

    pos = items.y.sum(0)  # (n_labels,)
    ok = (pos > 0) & (pos < items.n)
    skipped = {n: ("no positive" if int(pos[j]) == 0 else "every item is positive")
               for j, n in enumerate(names) if not ok[j]}
    nan = torch.full((len(names), d_sae), float("nan"))
    ap, f1, thr = nan.clone(), nan.clone(), nan.clone()
    if ok.any():
        sub = latent_metrics(items.item, items.latent, items.value, items.y[:, ok], d_sae)
        for full, part in zip((ap, f1, thr), sub, strict=True):
            full[ok] = part
    return pos, ok, skipped, (ap, f1, thr)


def _per_label(names: list[str], pos: torch.Tensor, n_items: int, ok: torch.Tensor,
               scores: tuple[torch.Tensor, torch.Tensor, torch.Tensor], top: int, probe: dict[str, Any]
               ) -> dict[str, Any]:
    """``probe.json``'s per-label entries: base rate, the ``top`` latents by AP (scored labels
    only) and the linear probe's result (``probe``: per label, None when it was not fitted)."""
    ap, f1, thr = scores  # (n_labels, d_sae) each
    per_label: dict[str, Any] = {}
    for j, name in enumerate(names):
        entry: dict[str, Any] = {"n_positive": int(pos[j]), "base_rate": float(pos[j]) / n_items}
        if ok[j]:
            best = torch.argsort(ap[j], descending=True, stable=True)[:top]
            entry["top_latents"] = [{"latent": int(k), "ap": float(ap[j, k]), "f1": float(f1[j, k]),
                                     "threshold": float(thr[j, k])} for k in best]
        entry["probe"] = probe.get(name)
        per_label[name] = entry
    return per_label


def _rows(ctx: AnalysisContext) -> tuple[np.ndarray, str]:
    """Rows probed: ``--option split=`` (default ``all``: the SAE is fixed, and the probe keeps
    its own train/test split of examples)."""

    side = str(ctx.options.get("split", DEFAULTS["split"]))
    frac = option(ctx, "heldout_frac", DEFAULT_FRAC, float, "fraction") if side == "tail" else DEFAULT_FRAC
    return select_rows(ctx.reader, sae_split(ctx), side, frac=frac, what=f"SAE {ctx.checkpoint}"), side


def _labelled_rows(ctx: AnalysisContext, rows: np.ndarray, examples: np.ndarray | None, block: int = 4096
                   ) -> np.ndarray:
    """The rows (ascending) of labelled examples: only those are encoded (a few labelled images
    of a large cache cost their own rows, not the cache). ``examples`` None: every row."""
    if examples is None:
        return rows
    keep = [np.empty(0, np.int64)]
    for lo in range(0, len(rows), block):
        chunk = rows[lo : lo + block]
        index = ctx.reader.read_index(int(chunk[0]), int(chunk[-1]) + 1)  # (span, T) records
        keep.append(chunk[np.isin(index["example"][chunk - chunk[0], 0], examples)])
    return np.concatenate(keep)


def _linear_probe(items: Any, names: list[str], ok: torch.Tensor, test_fraction: float, seed: int, l1: float,
                  top: int, iters: int, d_sae: int) -> dict[str, Any]:
    """Fit the L1 probe on the train examples, measure it on the test examples."""

    test = torch.from_numpy(ExampleSplit(test_fraction, seed).is_val(items.example))  # (N,) by example
    train = ~test
    y = items.y
    fit = ok & (y[train].sum(0) > 0) & (y[train].sum(0) < int(train.sum()))  # both classes to learn from
    weight = torch.full((len(names), d_sae), float("nan"))
    bias = torch.full((len(names),), float("nan"))
    head = {"test_fraction": test_fraction, "seed": seed, "l1": l1, "n_train": int(train.sum()),
            "n_test": int(test.sum()), "features": "latent scores / their RMS on the train items",
            "lambda": "probe_l1 * lambda_max per label"}
    if not fit.any():
        return {**head, "per_label": {}, "_weight": weight, "_bias": bias}
    rms = _train_rms(items, train, d_sae)
    x_train = _features(items, train, rms, d_sae)
    y_train = y[train][:, fit].double()
    lam = l1 * lambda_max(x_train, y_train)
    w, b, n_iter = fit_l1_logistic(x_train, y_train, lam, max_iter=iters, tol=1e-6)
    weight[fit] = (w / rms).float()  # raw-score units: logit = scores @ weight.T + bias
    bias[fit] = b.float()
    p_train = predict_proba(x_train, w, b)
    per_label: dict[str, Any] = {}
    x_test = _features(items, test, rms, d_sae) if test.any() else None
    p_test = predict_proba(x_test, w, b) if x_test is not None else None
    for c, j in enumerate(torch.nonzero(fit).flatten().tolist()):
        per_label[names[j]] = _probe_entry(w[c], rms, float(lam[c]), p_train[:, c], y[train][:, j],
                                           None if p_test is None else p_test[:, c], y[test][:, j], top)
    head["iterations"] = n_iter
    head["converged"] = n_iter < iters  # else raise --option probe_iters=
    single = bool((y.sum(1) == 1).all()) and int(fit.sum()) == len(names) and len(names) > 1
    if single and p_test is not None:  # one class per example: also the argmax accuracy
        head["test_top1_accuracy"] = float((p_test.argmax(1) == y[test].double().argmax(1)).double().mean())
    return {**head, "per_label": per_label, "_weight": weight, "_bias": bias}


def _train_rms(items: Any, train: torch.Tensor, d_sae: int) -> torch.Tensor:
    """(d_sae,) each latent's RMS score over the train items (1 for a latent silent there): the
    probe's features are scaled by it, so that one λ penalizes every latent alike."""
    on_train = train[items.item]
    sq = torch.zeros(d_sae, dtype=torch.float64).index_add_(0, items.latent[on_train],
                                                            items.value[on_train].double() ** 2)
    rms = (sq / max(int(train.sum()), 1)).sqrt()
    rms[rms == 0] = 1.0
    return rms


def _features(items: Any, mask: torch.Tensor, rms: torch.Tensor, d_sae: int) -> torch.Tensor:
    """The sparse (mask.sum(), d_sae) matrix of scaled scores of the items in ``mask`` (train or
    test), one row per item in item order: the scores are sparse, the matrix stays so."""
    rows_of = torch.full((items.n,), -1, dtype=torch.long)  # item -> row of the matrix
    rows_of[mask] = torch.arange(int(mask.sum()))
    sel = mask[items.item]
    idx = torch.stack([rows_of[items.item[sel]], items.latent[sel]])
    return torch.sparse_coo_tensor(idx, items.value[sel].double() / rms[items.latent[sel]], (int(mask.sum()), d_sae),
                                   check_invariants=False).coalesce()


def _probe_entry(w: torch.Tensor, rms: torch.Tensor, lam: float, p_train: torch.Tensor, y_train: torch.Tensor,
                 p_test: torch.Tensor | None, y_test: torch.Tensor, top: int) -> dict[str, Any]:
    """One label's probe (weights ``w`` (d_sae,) on the scaled features): AP on the train items;
    on the test items AP (None without a positive there) and accuracy at p = 0.5; and its
    ``top`` largest weights, in raw-score units and on the scaled features."""

    entry: dict[str, Any] = {
        "train_ap": average_precision(p_train, y_train),
        "n_nonzero": int((w != 0).sum()), "lambda": lam,
        "test_ap": None, "test_accuracy": None,
    }
    if p_test is not None and int(y_test.sum()) > 0:
        entry["test_ap"] = average_precision(p_test, y_test)
    if p_test is not None:
        entry["test_accuracy"] = float(((p_test >= 0.5) == y_test).double().mean())
    order = torch.argsort(w.abs(), descending=True, stable=True)[:top]
    entry["top_weights"] = [{"latent": int(k), "weight": float(w[k] / rms[k]), "std_weight": float(w[k])}
                            for k in order if w[k] != 0]
    return entry
