"""The sae viewer (Streamlit). Start it with ``sae view RUN_DIR`` or
``streamlit run packages/sae-viewer/src/sae_viewer/app.py -- RUN_DIR``.

Pages: run overview (sweep table with held-out and downstream metrics, FVU vs L0, training
curves) and feature browser (the SAE's downstream result; latents sorted by frequency or max
activation, paginated; per latent: statistics, activation histogram, top images with the latent's
patch heatmap, or top text contexts with per-token highlighting). Reads only precomputed files;
run `sae analyze` first for the feature pages.
"""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path

import numpy as np
import streamlit as st
from sae_core import SAEError

from sae_viewer import data

PAGE_SIZE = 50


def run_dir() -> Path:
    """The run to show: ``SAE_VIEWER_RUN`` if set, else the first argument after ``--``."""
    raw = os.environ.get("SAE_VIEWER_RUN")
    if not raw:
        args = [a for a in sys.argv[1:] if not a.startswith("-")]
        raw = args[0] if args else ""
    return Path(raw).expanduser()


@st.cache_data(show_spinner=False)
def _saes(path: str) -> list[data.SAEFiles]:
    return data.find_saes(Path(path))


@st.cache_data(show_spinner=False)
def _features(path: str) -> dict[str, np.ndarray] | None:
    return data.feature_table(data.SAEFiles(Path(path).name, Path(path)))


@st.cache_data(show_spinner=False, max_entries=64)
def _top(path: str, latent: int) -> dict | None:
    return data.top_examples(data.SAEFiles(Path(path).name, Path(path)), latent)


@st.cache_data(show_spinner=False)
def _vocab(cache: str) -> list[str] | None:
    return data.vocab(cache)


def overview(saes: list[data.SAEFiles]) -> None:
    import pandas as pd

    st.header("Run overview")
    table = pd.DataFrame(data.sweep_rows(saes))
    st.dataframe(table, hide_index=True, width="stretch")
    if {"fvu", "l0"} <= set(table.columns) and table["fvu"].notna().any():
        st.subheader("FVU vs L0")
        st.scatter_chart(table, x="l0", y="fvu", color="name")
    curves = []
    for s in saes:
        for m in data.metrics(s):
            curves.append({"step": m["step"], "fvu": m["fvu"], "sae": s.name})
    if curves:
        st.subheader("Training FVU")
        st.line_chart(pd.DataFrame(curves), x="step", y="fvu", color="sae")


def latent_list(sae: data.SAEFiles) -> int:
    feats = _features(str(sae.path))
    d_sae = sae.cfg.d_sae if sae.cfg is not None else 0
    if feats is None:
        st.info(f"No analyses for {sae.name} yet: run `sae analyze {sae.path}` to browse its features.")
        return int(st.number_input("latent", 0, max(d_sae - 1, 0), 0))
    import pandas as pd

    order_by = st.sidebar.selectbox("sort latents by", ["frequency", "max activation", "index"])
    key = {"frequency": "frequency", "max activation": "max_activation"}.get(order_by)
    order = np.argsort(-feats[key]) if key else np.arange(d_sae)
    pages = max(1, (len(order) + PAGE_SIZE - 1) // PAGE_SIZE)
    page = int(st.sidebar.number_input(f"page (of {pages})", 1, pages, 1)) - 1
    ids = order[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    st.sidebar.dataframe(
        pd.DataFrame({"latent": ids, "freq": feats["frequency"][ids], "max": feats["max_activation"][ids]}),
        hide_index=True, height=300,
    )
    default = int(ids[0]) if len(ids) else 0
    return int(st.number_input("latent", 0, max(d_sae - 1, 0), default, help="search by index"))


def text_contexts(top: dict, vocab: list[str] | None) -> None:
    """Top text windows with every token shaded by |code| (orange: positive, blue: negative)."""
    peak = float(top["values"].max()) if len(top["values"]) else 1.0  # values are magnitudes
    for value, tokens, acts in zip(top["values"], top["token_ids"], top["token_acts"], strict=True):
        spans = []
        for tok, act in zip(tokens, acts.astype(np.float32), strict=True):
            if tok < 0 or vocab is None or tok >= len(vocab) or vocab[tok] in ("[PAD]", "[CLS]", "[SEP]", "<pad>"):
                continue
            alpha = min(1.0, abs(float(act)) / peak) if peak > 0 else 0.0
            rgb = "0,90,255" if act < 0 else "255,80,0"
            text = html.escape(data.detokenize(vocab[tok]))
            spans.append(f'<span class="tok" title="{act:.3f}" style="background: rgba({rgb},{alpha:.2f})">{text}</span>')
        st.markdown(f'<div class="ctx"><b>{value:.3f}</b> &nbsp;{"".join(spans)}</div>', unsafe_allow_html=True)


def image_grid(top: dict) -> None:
    meta = top["meta"]
    kinds = meta["token_kinds"]
    patch_pos = [i for i, k in enumerate(kinds) if k == "patch"]
    cols = st.columns(4)
    for i, (example, value, acts) in enumerate(zip(top["examples"], top["values"], top["token_acts"], strict=True)):
        try:
            image = data.open_image(meta, int(example))
        except Exception as e:  # the dataset moved or its plugin is missing: say so, keep going
            cols[i % 4].warning(f"image {example}: {e}")
            continue
        try:
            overlay = data.heatmap_overlay(image, acts.astype(np.float32)[patch_pos], meta.get("extra", {}))
        except SAEError as e:  # the adapter's image metadata is unusable: show the image, say why
            cols[i % 4].warning(f"no heatmap: {e}")
            overlay = image
        cols[i % 4].image(overlay, caption=f"#{example}  |act| {value:.3f}", width="stretch")


def features(saes: list[data.SAEFiles]) -> None:
    st.header("Feature browser")
    names = [s.name for s in saes]
    sae = saes[names.index(st.sidebar.selectbox("SAE", names))]
    down = data.downstream(sae)
    if down is not None:
        st.markdown(data.downstream_line(down))
    latent = latent_list(sae)
    feats = _features(str(sae.path))
    if feats is not None:
        c1, c2, c3 = st.columns(3)
        c1.metric("firing frequency", f"{feats['frequency'][latent]:.2e}")
        c2.metric("mean activation", f"{feats['mean_activation'][latent]:.3f}")
        c3.metric("max activation", f"{feats['max_activation'][latent]:.3f}")
        hist = data.latent_histogram(sae, latent)
        if hist is not None and hist[0].sum() > 0:
            import pandas as pd

            counts, edges = hist
            st.bar_chart(pd.DataFrame({"log10 activation": np.round(edges[:-1].astype(np.float64), 2), "tokens": counts}),
                         x="log10 activation", y="tokens")
    top = _top(str(sae.path), latent)
    if top is None:
        return
    st.subheader(f"Top examples of latent {latent}")
    if len(top["values"]) == 0:
        st.write("This latent never fired on the analysed data (dead).")
    elif top["meta"]["modality"] == "text":
        text_contexts(top, _vocab(top["meta"]["cache"]))
    elif top["meta"]["modality"] == "image":
        image_grid(top)
    else:  # another modality: which examples, and how strongly
        import pandas as pd

        st.dataframe(pd.DataFrame({"example": top["examples"], "|act|": top["values"]}), hide_index=True)


def main() -> None:
    st.set_page_config(page_title="sae viewer", layout="wide")
    st.markdown("<style>.ctx{font-family:monospace;margin:4px 0;line-height:1.8}.tok{padding:1px 0}</style>",
                unsafe_allow_html=True)
    run = run_dir()
    if not run.is_dir():
        st.error(f"{run or '(none)'} is not a run directory; start with `sae view RUN_DIR`.")
        return
    saes = _saes(str(run))
    if not saes:
        st.error(f"no SAE checkpoints in {run}; train some with `sae train`.")
        return
    st.sidebar.title("sae viewer")
    st.sidebar.caption(str(run))
    page = st.sidebar.radio("page", ["Overview", "Features"])
    overview(saes) if page == "Overview" else features(saes)


main()
