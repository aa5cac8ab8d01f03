"""The sae viewer (Streamlit). Start it with ``sae view RUN_DIR`` or
``streamlit run packages/sae-viewer/src/sae_viewer/app.py -- RUN_DIR``.

Pages: run overview (sweep table with held-out and downstream metrics, FVU vs L0, training
curves, probe summary), feature browser (the SAE's downstream result; latents sorted by frequency
or max activation, paginated; per latent: statistics with the split and token count they come
from, activation histogram, its effect when ablated if `sae ablate` ran, top images with the
latent's patch heatmap, or top text contexts with per-token highlighting, and — where their files
exist — examples per activation quantile, decoder neighbours, co-occurring latents, logit effects
and the probe labels it predicts), "Search by token" (text SAEs: latents whose top examples fire
most on a token) and "Your input" (type a text or upload an image and see which features fire: the
only page that runs a model, and only when asked). The other pages read precomputed files; run
`sae analyze` first for the feature pages.

Caches are keyed by the stamp (mtime_ns, size, inode) of every file they read
(:mod:`sae_viewer.snapshot`), and a feature page is read as one consistent snapshot of its
checkpoint's files, so re-running `sae analyze` under an open viewer shows the new numbers only.
Links between pages are query parameters: ``?page=Features&sae=NAME&latent=N``.
"""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path

import numpy as np
import streamlit as st
from sae_core import SAEError

from sae_viewer import data, latent_files, live, render, snapshot, token_search

PAGE_SIZE = 50
PAGES = ["Overview", "Features", "Search by token", "Your input"]


def run_dir() -> Path:
    """The run to show: ``SAE_VIEWER_RUN`` if set, else the first argument after ``--``."""
    raw = os.environ.get("SAE_VIEWER_RUN")
    if not raw:
        args = [a for a in sys.argv[1:] if not a.startswith("-")]
        raw = args[0] if args else ""
    return Path(raw).expanduser()


def _run_stamp(run: Path) -> tuple:
    """The stamp of the run's checkpoint configs: a new or retrained SAE is a new cache key."""
    dirs = [run, *sorted(p for p in run.iterdir() if p.is_dir())]
    return tuple((str(d), snapshot.file_stamp(d / data.CFG_FILE)) for d in dirs)


@st.cache_data(show_spinner=False)
def _saes(path: str, stamp: tuple) -> list[data.SAEFiles]:
    return data.find_saes(Path(path))


@st.cache_data(show_spinner=False, max_entries=16)
def _features(path: str, stamp: snapshot.Stamp) -> tuple[snapshot.Stamp, dict[str, np.ndarray] | None]:
    """(stamp read, frequency/mean/max of every latent): the sidebar's latent list."""
    ckpt = Path(path)
    return snapshot.consistent(lambda: data.feature_table(data.SAEFiles(ckpt.name, ckpt)), ckpt,
                               latent_files.PAGE_FILES)


@st.cache_data(show_spinner=False, max_entries=64)
def _page(path: str, latent: int, stamp: snapshot.Stamp) -> tuple[snapshot.Stamp, dict]:
    """Everything a latent's page shows, read as one consistent snapshot of the checkpoint's
    files (``stamp`` is only the cache key: a changed file is a new key, so it is re-read)."""
    ckpt = Path(path)
    return snapshot.consistent(lambda: data.latent_page(data.SAEFiles(ckpt.name, ckpt), latent), ckpt,
                               latent_files.PAGE_FILES)


@st.cache_data(show_spinner=False)
def _vocab(cache: str, stamp: snapshot.FileStamp) -> list[str] | None:
    return data.vocab(cache)


def vocab(cache: str) -> list[str] | None:
    return _vocab(cache, snapshot.file_stamp(Path(cache) / data.VOCAB))


def query_param(name: str, default: str | None = None) -> str | None:
    value = st.query_params.get(name)
    return value if value else default


def latent_link(sae: data.SAEFiles, latent: int) -> str:
    """Markdown link to a latent's page (query parameters read by :func:`main`)."""
    from urllib.parse import quote

    return f"[{latent}](?page=Features&sae={quote(sae.name)}&latent={latent})"


@st.cache_resource(show_spinner="loading the model…", max_entries=2)
def _live_model(path: str):
    return live.load(path)


def overview(saes: list[data.SAEFiles]) -> None:
    import pandas as pd

    st.header("Run overview")
    table = pd.DataFrame(data.sweep_rows(saes))
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption("fvu / l0 / dead / dense: the batches read after the last training step (cfg.json); "
               "held-out fvu / cosine: `sae analyze` (reconstruction.json), on the split below.")
    for s in saes:
        if s.has(data.RECONSTRUCTION):
            provenance(latent_files.read_json(s.path / data.RECONSTRUCTION), f"{s.name} held-out metrics")
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
    probe_summary(saes)


def latent_list(sae: data.SAEFiles, feats: dict[str, np.ndarray] | None) -> int:
    d_sae = sae.cfg.d_sae if sae.cfg is not None else 0
    asked = query_param("latent")
    start = int(asked) if asked is not None and asked.isdigit() and int(asked) < max(d_sae, 1) else None
    if feats is None:
        st.info(f"No analyses for {sae.name} yet: run `sae analyze {sae.path}` to browse its features.")
        return int(st.number_input("latent", 0, max(d_sae - 1, 0), start or 0))
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
    default = start if start is not None else (int(ids[0]) if len(ids) else 0)
    return int(st.number_input("latent", 0, max(d_sae - 1, 0), default, help="search by index"))


def provenance(doc: dict | None, what: str, count_key: str = "n_tokens") -> None:
    """Say which split and how many tokens a section's numbers come from; warn when few."""
    line, few = latent_files.provenance(doc, what, count_key)
    st.caption(line)
    if few:
        st.warning(f"{what}: only {doc.get(count_key)} tokens analysed (< {latent_files.FEW_TOKENS:,}); "
                   "frequencies and examples are noisy — analyse more tokens (`sae analyze` on a bigger cache).")


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


def text_contexts(top: dict, vocab: list[str] | None, peak: float | None = None) -> None:
    """Text windows with every token shaded by |code| (orange: positive, blue: negative), relative
    to ``peak`` (default: the strongest of these windows)."""
    if peak is None:
        peak = float(top["values"].max()) if len(top["values"]) else 1.0  # values are magnitudes
    for value, tokens, acts in zip(top["values"], top["token_ids"], top["token_acts"], strict=True):
        spans = render.token_window(tokens, acts, vocab, peak)
        st.markdown(f'<div class="ctx"><b>{value:.3f}</b> &nbsp;{spans}</div>', unsafe_allow_html=True)


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


def pick_sae(saes: list[data.SAEFiles], key: str) -> data.SAEFiles:
    names = [s.name for s in saes]
    asked = query_param("sae")
    index = names.index(asked) if asked in names else 0
    return saes[names.index(st.sidebar.selectbox("SAE", names, index=index, key=key))]


def load_page(sae: data.SAEFiles, latent_of) -> tuple[int, dict[str, np.ndarray] | None, dict]:
    """(latent, feature table, page data), all read from one version of the checkpoint's files:
    if they changed between the sidebar's read and the page's, both are read again."""
    path = str(sae.path)
    now = snapshot.stamp(sae.path, latent_files.PAGE_FILES)
    seen, feats = _features(path, now)
    latent = latent_of(feats)  # the widgets: once per script run
    for _ in range(5):
        read, page = _page(path, latent, now)
        if read == seen:
            return latent, feats, page
        now = snapshot.stamp(sae.path, latent_files.PAGE_FILES)  # the files changed: read both again
        seen, feats = _features(path, now)
    raise snapshot.ChangingFilesError(f"the analysis files of {sae.path} keep changing; reload when `sae analyze` is done")


def features(saes: list[data.SAEFiles]) -> None:
    st.header("Feature browser")
    sae = pick_sae(saes, "features_sae")
    try:
        latent, _, page = load_page(sae, lambda feats: latent_list(sae, feats))
    except snapshot.ChangingFilesError as e:
        st.warning(str(e))
        return
    if page["downstream"] is not None:
        st.markdown(data.downstream_line(page["downstream"]))
    for line in page["ablation"]:
        st.markdown(line)
    stats = page["stats"]
    if stats is not None:
        provenance(page["summary"], "Statistics of this latent")
        c1, c2, c3 = st.columns(3)
        c1.metric("firing frequency", f"{stats['frequency']:.2e}")
        c2.metric("mean activation", f"{stats['mean_activation']:.3f}")
        c3.metric("max activation", f"{stats['max_activation']:.3f}")
        hist = page["histogram"]
        if hist is not None and hist[0].sum() > 0:
            import pandas as pd

            counts, edges = hist
            st.bar_chart(pd.DataFrame({"log10 activation": np.round(edges[:-1].astype(np.float64), 2), "tokens": counts}),
                         x="log10 activation", y="tokens")
    top = page["top"]
    if top is not None:
        st.subheader(f"Top examples of latent {latent}")
        if top["meta"].get("split") or top["meta"].get("n_tokens"):
            provenance(top["meta"], "Top examples")
        examples(top, peak=None)
    latent_sections(sae, latent, page)


def examples(top: dict, peak: float | None) -> None:
    """A latent's examples (top or one quantile band), by modality."""
    if len(top["values"]) == 0:
        st.write("This latent never fired on the analysed data (dead).")
    elif top["meta"].get("modality") == "text" and top.get("token_ids") is not None:
        text_contexts(top, vocab(top["meta"]["cache"]), peak)
    elif top["meta"].get("modality") == "image":
        image_grid(top)
    else:  # another modality: which examples, and how strongly
        import pandas as pd

        st.dataframe(pd.DataFrame({"example": top["examples"], "|act|": top["values"]}), hide_index=True)


def latent_sections(sae: data.SAEFiles, latent: int, page: dict) -> None:
    """The sections of the optional analyses, each only where its file exists."""
    import pandas as pd

    q = page["quantiles"]
    if q is not None:
        st.subheader("Examples across activation quantiles")
        provenance(q["meta"], "Quantile examples")
        peak = page["stats"]["max_activation"] if page["stats"] else None
        for band in reversed(q["bands"]):
            low, high = band["low"], band["high"]
            title = (f"{low:.0%}–{high:.0%} of the max activation" if low is not None and high is not None
                     else "band")
            n = len(band["values"])
            with st.expander(f"{title} ({n} example{'' if n == 1 else 's'})", expanded=False):
                examples({**band, "meta": q["meta"]}, peak)
    near = page["neighbours"]
    if near is not None:
        st.subheader("Decoder neighbours")
        st.caption("Latents whose decoder directions have the highest cosine with this one's.")
        st.markdown("  \n".join(f"latent {latent_link(sae, i)} — cosine {c:.3f}" for i, c in near) or "none")
    co = page["cooccurrence"]
    if co is not None:
        st.subheader("Co-occurring latents")
        if co:
            st.markdown("  \n".join(f"latent {latent_link(sae, r['latent'])} — {r['count']} tokens together, "
                                     f"Jaccard {r['jaccard']:.3f}, PMI {r['pmi']:.2f}" for r in co))
        else:
            st.write("No latent fires together with this one.")
    logits = page["logit_effects"]
    if logits is not None:
        st.subheader("Logit effects")
        if "skipped" in logits:
            st.write(f"Skipped: {logits['skipped']}")
        else:
            c1, c2 = st.columns(2)
            c1.dataframe(pd.DataFrame(logits["top"], columns=["id", "logit", "promoted token"]), hide_index=True)
            c2.dataframe(pd.DataFrame(logits["bottom"], columns=["id", "logit", "suppressed token"]), hide_index=True)
    if page["probe"] is not None:
        st.subheader("Probe labels predicted")
        provenance(page["probe"], "Probe", "n_examples")
        if page["probe_labels"]:
            st.dataframe(pd.DataFrame(page["probe_labels"]), hide_index=True)
        else:
            st.write("This latent is not among the top latents of any probed label.")


def search_by_token(saes: list[data.SAEFiles]) -> None:
    """Type a token; list the latents whose top examples fire most on it, with links."""
    st.header("Search features by token")
    sae = pick_sae(saes, "search_sae")
    meta = latent_files.read_json(sae.path / data.TOP_EXAMPLES_META)
    if meta is None:
        st.info(f"No top examples for {sae.name} yet: run `sae analyze {sae.path}`.")
        return
    words = vocab(meta.get("cache", "")) if meta.get("modality") == "text" else None
    if words is None:
        st.info(f"{sae.name} is not a text SAE with a vocabulary (vocab.json in its cache); this page searches text tokens.")
        return
    query = st.text_input("token", placeholder="a word or token piece, e.g. features")
    if not query:
        return
    ids = token_search.token_ids_for(query, words)
    if not ids:
        st.warning(f"'{query}' is not a token of this vocabulary; try a single word or piece.")
        return
    provenance(latent_files.read_json(sae.path / latent_files.FEATURE_STATS_SUMMARY), "Top examples searched")
    found = token_search.search(sae.path / data.TOP_EXAMPLES, ids)
    if not found:
        st.write(f"No latent's top examples fire on '{query}'.")
        return
    st.markdown(f"Latents firing on '{query}' (token ids {', '.join(map(str, ids))}), strongest first:")
    st.markdown("  \n".join(f"latent {latent_link(sae, r['latent'])} — max |act| {r['max_act']:.3f} on it, "
                             f"in {r['hits']} of its top examples" for r in found))


def probe_summary(saes: list[data.SAEFiles]) -> None:
    import pandas as pd

    for s in saes:
        doc = latent_files.probe(s.path)
        if doc is None:
            continue
        st.subheader(f"Probes of {s.name}")
        provenance(doc, "Probe", "n_examples")
        rows = [{"label": label, **v} for label, v in doc.get("linear_probe", {}).items()]
        for r in rows:
            best = (doc.get("per_label", {}).get(r["label"]) or [{}])[0]
            r["best latent"], r["best latent AP"] = best.get("latent"), best.get("ap")
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True)


def your_input(saes: list[data.SAEFiles]) -> None:
    """Type a text (or upload an image) and see which features fire; the model loads on submit."""
    st.header("Your input")
    sae = pick_sae(saes, "input_sae")
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
        saes = _saes(str(run), _run_stamp(run))
    except SAEError as e:  # another library's checkpoint, or a damaged one: its one line, no traceback
        st.error(str(e))
        return
    if not saes:
        st.error(f"no SAE checkpoints in {run}; train some with `sae train`.")
        return
    st.sidebar.title("sae viewer")
    st.sidebar.caption(str(run))
    asked = query_param("page", "Overview")
    page = st.sidebar.radio("page", PAGES, index=PAGES.index(asked) if asked in PAGES else 0)
    {"Overview": overview, "Features": features, "Search by token": search_by_token,
     "Your input": your_input}[page](saes)


main()
