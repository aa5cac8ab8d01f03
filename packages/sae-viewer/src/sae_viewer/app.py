"""The sae viewer (Streamlit). Start it with ``sae view RUN_DIR`` or
``streamlit run packages/sae-viewer/src/sae_viewer/app.py -- RUN_DIR``.

Pages: run overview (sweep table with held-out and downstream metrics, FVU vs L0, training
curves), feature browser (the SAE's downstream result; latents sorted by frequency or max
activation, paginated; per latent: statistics, activation histogram, its effect when ablated if
`sae ablate` ran, top images with the latent's patch heatmap, or top text contexts with per-token
highlighting) and "Your input" (type a text or upload an image and see which features fire: the
only page that runs a model, and only when asked). The other pages read precomputed files; run
`sae analyze` first for the feature pages.
"""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path

import numpy as np
import streamlit as st
from sae_core import SAEError

from sae_viewer import data, live

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


@st.cache_resource(show_spinner="loading the model…", max_entries=2)
def _live_model(path: str):
    return live.load(path)


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


def highlighted(pieces: list[tuple[str, float, str]], peak: float) -> str:
    """HTML of tokens shaded by |activation| relative to ``peak`` (orange: positive, blue:
    negative codes): (text, activation, hover title) each."""
    spans = []
    for text, act, title in pieces:
        alpha = min(1.0, abs(act) / peak) if peak > 0 else 0.0
        rgb = "0,90,255" if act < 0 else "255,80,0"
        spans.append(f'<span class="tok" title="{html.escape(title)}" style="background: rgba({rgb},{alpha:.2f})">'
                     f'{html.escape(text)}</span>')
    return f'<div class="ctx">{"".join(spans)}</div>'


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
    for line in data.ablation_lines(data.ablation(sae), latent):
        st.markdown(line)
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


def your_input(saes: list[data.SAEFiles]) -> None:
    """Type a text (or upload an image) and see which features fire; the model loads on submit."""
    st.header("Your input")
    names = [s.name for s in saes]
    sae = saes[names.index(st.sidebar.selectbox("SAE", names, key="input_sae"))]
    kind = live.modality(sae.cfg)
    if kind not in ("text", "image"):
        st.info(f"{sae.name} reads a {kind or 'unknown'} model; this page runs text and image models.")
        return
    with st.form("your_input"):
        if kind == "text":
            example = st.text_area("text", placeholder="Type a sentence to see which features fire on it")
        else:
            example = st.file_uploader("image", type=["png", "jpg", "jpeg", "webp", "bmp"])
        top = int(st.number_input("features per token", 1, 50, 5))
        submitted = st.form_submit_button("Show features")
    st.caption("The model runs only when you press the button (the first time it loads, which can take a while).")
    key = f"live:{sae.path}"
    if submitted:
        if not example:
            st.warning("Type some text first." if kind == "text" else "Upload an image first.")
            return
        if kind == "image":
            from PIL import Image

            example = Image.open(example).convert("RGB")
        try:
            model, sae_model = _live_model(str(sae.path))
            st.session_state[key] = live.run(model, sae_model, example, top)
        except Exception as e:  # a model that cannot be re-created here: say why, keep the page
            st.error(f"cannot run {sae.name}'s model here: {e}")
            return
    doc = st.session_state.get(key)
    if doc is None:
        return
    tops = doc["top_features"]
    if not tops:
        st.write("No feature fires on this input.")
        return
    st.subheader(f"Features of {sae.name} at {doc['layer']} on your input")
    choice = st.selectbox("highlight feature", [f for f, _ in tops],
                          format_func=lambda f: f"{f} (max {dict(tops)[f]:.3f})", key=f"{key}:feature")
    column = doc["acts"][:, choice] if len(doc["acts"]) else np.zeros(0)
    if kind == "text":
        pieces = [(data.detokenize(t.get("token", "?")), float(a),
                   " ".join(f"{i}:{v:.3f}" for i, v in t["features"])) for t, a in zip(doc["tokens"], column, strict=True)]
        st.markdown(highlighted(pieces, float(np.abs(column).max()) if len(column) else 0.0), unsafe_allow_html=True)
    elif doc.get("patch_acts") is not None:
        st.image(data.heatmap_overlay(doc["image"], doc["patch_acts"][:, choice], doc["extra"]),
                 caption=f"feature {choice} on your image")
    import pandas as pd

    st.dataframe(pd.DataFrame([{"token": t.get("token", t.get("patch", t["kind"])),
                                "top features": "  ".join(f"{i}:{v:.3f}" for i, v in t["features"])}
                               for t in doc["tokens"]]), hide_index=True, width="stretch")


def main() -> None:
    st.set_page_config(page_title="sae viewer", layout="wide")
    st.markdown("<style>.ctx{font-family:monospace;margin:4px 0;line-height:1.8}.tok{padding:1px 0}</style>",
                unsafe_allow_html=True)
    run = run_dir()
    if not run.is_dir():
        st.error(f"{run or '(none)'} is not a run directory; start with `sae view RUN_DIR`.")
        return
    try:
        saes = _saes(str(run))
    except SAEError as e:  # another library's checkpoint, or a damaged one: its one line, no traceback
        st.error(str(e))
        return
    if not saes:
        st.error(f"no SAE checkpoints in {run}; train some with `sae train`.")
        return
    st.sidebar.title("sae viewer")
    st.sidebar.caption(str(run))
    page = st.sidebar.radio("page", ["Overview", "Features", "Your input"])
    {"Overview": overview, "Features": features, "Your input": your_input}[page](saes)


main()
