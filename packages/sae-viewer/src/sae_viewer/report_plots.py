"""The static plots of ``sae report`` (matplotlib, Agg: no display, no pyplot global state).

Each function returns PNG bytes; :mod:`sae_viewer.report` embeds them as data URIs and saves them
beside the HTML.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

CURVES = (("loss", "loss"), ("fvu", "FVU"), ("l0", "L0"), ("dead_frac", "dead fraction"))


def _figure(width: float = 7.0, height: float = 4.5) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def frontier(points: dict[str, list[tuple[str, float, float]]]) -> bytes:
    """FVU vs L0 of every SAE, one series per split: {series label: [(sae, l0, fvu)]}."""
    fig = _figure()
    ax = fig.add_subplot()
    for (label, pts), marker in zip(points.items(), "os^Dv", strict=False):
        pts = sorted(p for p in pts if p[1] is not None and p[2] is not None)
        pts.sort(key=lambda p: p[1])
        if not pts:
            continue
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker=marker, label=label)
        for name, l0, fvu in pts:
            ax.annotate(name, (l0, fvu), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("FVU (fraction of variance unexplained)")
    ax.set_title("Sparsity–reconstruction frontier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def training_curves(curves: dict[str, list[dict[str, Any]]]) -> bytes:
    """metrics.jsonl of every SAE: loss, FVU, L0, dead fraction by step (val_* dashed)."""
    fig = _figure(11, 7)
    axes = fig.subplots(2, 2).ravel()
    for ax, (key, title) in zip(axes, CURVES, strict=True):
        for i, (name, records) in enumerate(curves.items()):
            color = f"C{i % 10}"
            for k, style, suffix in ((key, "-", " (train batches)"), (f"val_{key}", "--", " (val split)")):
                pts = [(r["step"], r[k]) for r in records if r.get(k) is not None and "step" in r]
                if pts:  # markers where a short run logged few points (one point draws no line)
                    ax.plot(*zip(*pts, strict=True), style, color=color, label=name + suffix,
                            marker="o" if len(pts) < 8 else None, markersize=4)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "loss" and ax.lines and all(y > 0 for line in ax.lines for y in line.get_ydata()):
            ax.set_yscale("log")
    handles, labels = axes[1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8)
    return png(fig)


def density(hists: dict[str, dict[str, list[float]]]) -> bytes:
    """log10 firing frequency of the latents of every SAE (feature_stats.json log_freq_hist)."""
    fig = _figure()
    ax = fig.add_subplot()
    for name, h in hists.items():
        edges, counts = np.asarray(h["edges"], dtype=np.float64), np.asarray(h["counts"], dtype=np.float64)
        ax.stairs(counts, edges, label=name)
    ax.set_xlabel("log10 firing frequency")
    ax.set_ylabel("latents")
    ax.set_title("Feature density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)
