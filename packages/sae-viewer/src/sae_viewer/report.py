"""``sae report``: one self-contained HTML page describing a trained (and analysed) run.

Why a static page: a run is shared as a file (mailed, attached to an issue, archived with the
checkpoints) and opened years later without a server or network. So every plot is a PNG embedded
as a base64 data URI (and also saved as a PNG file in ``<report stem>_files/`` beside the HTML),
the CSS is inline, and nothing references an external URL.

Sections: the sweep's FVU-vs-L0 frontier (each number says which split it is on), training
curves (metrics.jsonl), feature-density histograms (feature_stats.json), downstream and held-out
reconstruction metrics (downstream.json, reconstruction.json), and per SAE its most frequent
live latents with their top examples (text windows with highlighted tokens; for images,
thumbnails with the latent's heatmap when the dataset can be re-opened, else the example ids).
A section whose files are missing says which command writes them. Only files are read: no model
runs.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from sae_core import SAEError, filenames

from sae_viewer import data, render, report_plots

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
img.plot{max-width:100%;border:1px solid #eee}
.missing{background:#fff6e0;border-left:4px solid #e0a000;padding:.5em 1em}
.note{color:#666;font-size:.85em}
.ctx{font-family:monospace;margin:3px 0;line-height:1.8}.tok{padding:1px 0}
.thumbs img{width:96px;height:96px;margin:2px;border:1px solid #ddd}
.latent{margin:1em 0 1.5em 0}
"""


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise SAEError(f"{path} is not valid JSON ({e}); re-create it (`sae analyze` or `sae train`)") from None


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _missing(what: str, command: str) -> str:
    return f'<p class="missing">No {what}: run <code>{html.escape(command)}</code> to produce it.</p>'


class _Plots:
    """Embeds PNGs as data URIs and saves each as ``<dir>/<name>.png``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.saved: list[Path] = []

    def img(self, name: str, png: bytes, alt: str) -> str:
        from sae_core import atomic_write_bytes

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.png"
        atomic_write_bytes(path, png)
        self.saved.append(path)
        return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _frontier(run: Path, saes: list[data.SAEFiles], plots: _Plots) -> str:
    sweep = _json(run / filenames.SWEEP_FILE) if (run / filenames.SWEEP_FILE).is_file() else None
    finals = {e["name"]: e.get("final", {}) for e in (sweep or {}).get("saes", [])}
    series: dict[str, list[tuple[str, float, float]]] = {"training (final batches)": [], "validation split": []}
    rows = []
    for s in saes:
        m = finals.get(s.name) or (s.cfg.metrics if s.cfg is not None else {})
        rec = _json(s.path / filenames.RECONSTRUCTION_FILE)
        row = {"SAE": s.name, "arch": s.cfg.architecture if s.cfg else None, "d_sae": s.cfg.d_sae if s.cfg else None,
               "FVU (train batches)": m.get("fvu"), "L0 (train batches)": m.get("l0"),
               "FVU (val split)": m.get("val_fvu"), "L0 (val split)": m.get("val_l0"),
               "dead (val split)": m.get("val_dead_frac")}
        series["training (final batches)"].append((s.name, m.get("l0"), m.get("fvu")))
        series["validation split"].append((s.name, m.get("val_l0"), m.get("val_fvu")))
        if rec:
            split = rec.get("split", "unrecorded")
            series.setdefault(f"sae analyze ({split} split)", []).append((s.name, rec.get("l0"), rec.get("fvu")))
            row.update({"FVU (analysed)": rec.get("fvu"), "L0 (analysed)": rec.get("l0"),
                        "analysed split": split, "analysed tokens": rec.get("n_tokens")})
        rows.append(row)
    src = f"{filenames.SWEEP_FILE}" if sweep else "each SAE's cfg.json metrics"
    out = [f'<h2 id="frontier">FVU vs L0 frontier</h2><p class="note">Training numbers from {src}: "train batches" '
           "are the batches read after the last step (inference mode), \"val split\" the held-out validation "
           "examples; \"analysed\" numbers from reconstruction.json (<code>sae analyze</code>), on the split it names.</p>"]
    if any(p[1] is not None and p[2] is not None for pts in series.values() for p in pts):
        out.append(plots.img("frontier", report_plots.frontier(series), "FVU vs L0"))
    out.append(_table(rows))
    if not any((s.path / filenames.RECONSTRUCTION_FILE).is_file() for s in saes):
        out.append(_missing("held-out reconstruction metrics", f"sae analyze {run}"))
    return "\n".join(out)


def _curves(run: Path, saes: list[data.SAEFiles], plots: _Plots) -> str:
    curves = {s.name: data.metrics(s) for s in saes}
    curves = {k: v for k, v in curves.items() if v}
    head = ('<h2 id="curves">Training curves</h2><p class="note">From metrics.jsonl: solid lines are the logged '
            "training batches, dashed lines the validation split (val_*).</p>")
    if not curves:
        return head + _missing("training metrics (metrics.jsonl)", f"sae train --out {run} …")
    return head + plots.img("training_curves", report_plots.training_curves(curves), "training curves")


def _density(run: Path, saes: list[data.SAEFiles], plots: _Plots) -> str:
    hists, notes = {}, []
    for s in saes:
        summary = _json(s.path / filenames.FEATURE_STATS_SUMMARY_FILE)
        if summary and "log_freq_hist" in summary:
            hists[s.name] = summary["log_freq_hist"]
        elif s.has(filenames.FEATURE_STATS_FILE):  # an older summary: bin the frequencies here
            freq = data.feature_table(s)["frequency"].astype(np.float64)  # (d_sae,)
            counts, edges = np.histogram(np.log10(np.clip(freq, 1e-10, None)), bins=40, range=(-10, 0))
            hists[s.name] = {"edges": edges.tolist(), "counts": counts.tolist()}
        else:
            continue
        summary = summary or {}
        notes.append({"SAE": s.name, "split": summary.get("split", "unrecorded"), "tokens": summary.get("n_tokens"),
                      "dead fraction": summary.get("dead_frac"), "dense fraction": summary.get("dense_frac"),
                      "mean L0": summary.get("mean_l0")})
    head = ('<h2 id="density">Feature density</h2><p class="note">Histogram of log10 firing frequency of the '
            "latents (feature_stats.json, <code>sae analyze</code>); dead latents sit at -10.</p>")
    if not hists:
        return head + _missing("feature statistics", f"sae analyze {run}")
    return head + plots.img("density", report_plots.density(hists), "feature density") + _table(notes)


def _downstream(run: Path, saes: list[data.SAEFiles]) -> str:
    rows, lines = [], []
    for s in saes:
        d = data.downstream(s)
        if d is None:
            continue
        lines.append(f"<li><b>{html.escape(s.name)}</b>: {html.escape(data.downstream_line(d).replace('**', ''))} "
                     f"(split: {html.escape(str(d.get('split', 'unrecorded')))})</li>")
        if "skipped" not in d:
            rows.append({"SAE": s.name, "split": d.get("split"), "rows": d.get("n_rows"),
                         **{k: v for k, v in d.items() if isinstance(v, float) and k != "cache_rel_error"}})
    head = ('<h2 id="downstream">Downstream metrics</h2><p class="note">Each SAE spliced into the model '
            "(downstream.json, <code>sae analyze</code>); ± one standard error where given.</p>")
    if not lines:
        return head + _missing("downstream results", f"sae analyze {run}")
    return head + f"<ul>{''.join(lines)}</ul>" + (_table(rows) if rows else "")


def _thumbnail(meta: dict[str, Any], example: int, acts: np.ndarray) -> str | None:
    """A 96 px PNG data URI of the example's image with the latent's patch heatmap, or None."""
    try:
        image = data.open_image(meta, example)
        patch = [i for i, k in enumerate(meta.get("token_kinds", [])) if k == "patch"]
        with contextlib.suppress(SAEError):  # unusable image metadata: the plain image
            image = data.heatmap_overlay(image, acts.astype(np.float32)[patch], meta.get("extra", {})) if patch else image
        import io

        image = image.convert("RGB")
        image.thumbnail((96, 96))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:  # the dataset moved or its plugin is missing: the ids are shown instead
        return None


def _examples_html(top: dict[str, Any], vocab: list[str] | None, n_examples: int) -> str:
    meta = top["meta"]
    values = top["values"][:n_examples]
    if len(values) == 0:
        return "<p>never fired on the analysed data</p>"
    if top.get("token_ids") is not None and vocab is not None:
        peak = float(values.max())
        return "".join(f'<div class="ctx"><b>{v:.3f}</b> &nbsp;{render.token_window(ids, acts, vocab, peak)}</div>'
                       for v, ids, acts in zip(values, top["token_ids"], top["token_acts"], strict=False))
    ids = [int(e) for e in top["examples"][:n_examples]]
    if meta.get("modality") == "image":
        thumbs = [_thumbnail(meta, e, a) for e, a in zip(ids, top["token_acts"], strict=False)]
        if all(t is not None for t in thumbs):
            return '<div class="thumbs">' + "".join(
                f'<img alt="example {e}" title="example {e}, |act| {v:.3f}" src="{t}">'
                for e, v, t in zip(ids, values, thumbs, strict=True)) + "</div>"
        note = " (the dataset could not be re-opened here: example ids only)"
    else:
        note = ""
    return f"<p>examples {', '.join(f'{e} ({v:.3f})' for e, v in zip(ids, values, strict=True))}{note}</p>"


def _features(run: Path, saes: list[data.SAEFiles], n_features: int, n_examples: int) -> str:
    out = ['<h2 id="features">Top features</h2><p class="note">Per SAE, its most frequent live latents (not dense '
           f"ones above 10% frequency first) with their top {n_examples} examples (top_examples.*, "
           "<code>sae analyze</code>); tokens shaded by |activation| (orange positive, blue negative).</p>"]
    for s in saes:
        out.append(f"<h3>{html.escape(s.name)}</h3>")
        feats = data.feature_table(s)
        if feats is None or not s.has(data.TOP_EXAMPLES):
            out.append(_missing(f"feature statistics or top examples for {s.name}", f"sae analyze {s.path}"))
            continue
        freq = feats["frequency"].astype(np.float64)  # (d_sae,)
        dense = freq > 0.1
        order = [int(i) for i in np.lexsort((-freq, dense)) if freq[i] > 0][:n_features]
        summary = _json(s.path / filenames.FEATURE_STATS_SUMMARY_FILE) or {}
        out.append(f'<p class="note">Statistics from {summary.get("n_tokens", "an unrecorded number of")} tokens '
                   f'of the {html.escape(str(summary.get("split", "unrecorded")))} split.</p>')
        vocab_cache: dict[str, list[str] | None] = {}
        for latent in order:
            top = data.top_examples(s, latent)
            if top is None:
                continue
            cache = top["meta"].get("cache", "")
            if cache not in vocab_cache:
                vocab_cache[cache] = data.vocab(cache) if cache else None
            out.append(f'<div class="latent"><b>latent {latent}</b> — frequency {freq[latent]:.2e}, '
                       f"mean {feats['mean_activation'][latent]:.3f}, max {feats['max_activation'][latent]:.3f}"
                       + _examples_html(top, vocab_cache[cache], n_examples) + "</div>")
    return "\n".join(out)


def build_report(run: Path, out: Path | None = None, *, n_features: int = 8, n_examples: int = 5) -> Path:
    """Write the HTML report of ``run`` (a run directory or one checkpoint) to ``out`` (default
    ``RUN/report.html``) and its plots to ``<out stem>_files/*.png``; returns ``out``."""
    from sae_core import atomic_write_text, find_checkpoints

    run = Path(run)
    if not run.is_dir():
        raise SAEError(f"{run} is not a directory; pass the --out of `sae train`")
    find_checkpoints(run)  # no checkpoint is a clear SAEError
    if n_features < 1 or n_examples < 1:
        raise SAEError("--features and --examples must be at least 1")
    saes = data.find_saes(run)
    out = Path(out) if out is not None else run / "report.html"
    plots = _Plots(out.parent / f"{out.stem}_files")
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>SAE run report: {html.escape(run.name)}</h1>",
        f'<p class="note">{html.escape(str(run.resolve()))} — {len(saes)} SAE(s) — generated {when} by '
        "<code>sae report</code> from the run's files (no model was run).</p>",
        '<p><a href="#frontier">frontier</a> · <a href="#curves">training curves</a> · <a href="#density">density</a> · '
        '<a href="#downstream">downstream</a> · <a href="#features">top features</a></p>',
        _frontier(run, saes, plots), _curves(run, saes, plots), _density(run, saes, plots),
        _downstream(run, saes), _features(run, saes, n_features, n_examples),
    ]
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>sae report: {html.escape(run.name)}'
           f"</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, doc)
    return out
