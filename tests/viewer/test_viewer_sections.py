"""The viewer's optional feature-page sections (quantile examples, decoder neighbours,
co-occurrence, logit effects, probes), the search-by-token page, provenance lines, and fresh data
after the analysis files are rewritten under a running viewer — driven with Streamlit's AppTest
on a small analysed run plus fixture files in exactly the formats the analyses write."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import helpers.shared_runs as shared_runs
import numpy as np
import pytest

APP = Path(__file__).resolve().parents[2] / "packages" / "sae-viewer" / "src" / "sae_viewer" / "app.py"
LATENT = 5
N_BANDS, M = 3, 2


def _save(path: Path, tensors: dict[str, np.ndarray]) -> None:
    from sae_core.io import atomic_write_bytes
    from safetensors.numpy import save

    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))


def _json(path: Path, doc) -> None:
    from sae_core.io import atomic_write_json

    atomic_write_json(path, doc)


def write_fixtures(ckpt: Path) -> None:
    """Every optional analysis file, in the documented formats, for all latents."""
    from safetensors.numpy import load_file

    top = load_file(str(ckpt / "top_examples.safetensors"))
    meta = json.loads((ckpt / "top_examples.json").read_text())
    d_sae = top["token_ids"].shape[0]
    idx = np.arange(d_sae)
    # quantile bands: the top examples' first M windows in every band, band b valued (b+1)/10
    q = {name: np.repeat(top[name][:, None, :M], N_BANDS, axis=1) for name in ("rows", "examples", "token_acts", "token_ids")}
    q["values"] = np.broadcast_to((np.arange(N_BANDS, dtype=np.float32)[None, :, None] + 1) / 10, (d_sae, N_BANDS, M)).copy()
    q["rows"][:, 0, 1] = -1  # an empty slot in the lowest band
    _save(ckpt / "quantile_examples.safetensors", q)
    meta = {k: v for k, v in meta.items() if k not in ("n_tokens", "n_rows")}  # a file that does not record them
    _json(ckpt / "quantile_examples.json", {**meta, "band_edges": [0.0, 0.25, 0.5, 1.0], "m": M, "split": "val"})
    _save(ckpt / "neighbours.safetensors", {
        "indices": np.stack([(idx + 1) % d_sae, (idx + 2) % d_sae, np.full(d_sae, -1)], 1).astype(np.int64),
        "cosine": np.tile(np.array([0.91, 0.82, 0.0], np.float32), (d_sae, 1))})
    _save(ckpt / "cooccurrence.safetensors", {
        "indices": np.stack([(idx + 7) % d_sae, np.full(d_sae, -1)], 1).astype(np.int64),
        "count": np.tile(np.array([42, 0], np.int64), (d_sae, 1)),
        "jaccard": np.tile(np.array([0.375, 0.0], np.float32), (d_sae, 1)),
        "pmi": np.tile(np.array([1.25, 0.0], np.float32), (d_sae, 1))})
    _save(ckpt / "logit_effects.safetensors", {
        "top_ids": np.tile(np.array([2838, 4275], np.int64), (d_sae, 1)),
        "top_values": np.tile(np.array([0.5, 0.25], np.float32), (d_sae, 1)),
        "bottom_ids": np.tile(np.array([1996, 1997], np.int64), (d_sae, 1)),
        "bottom_values": np.tile(np.array([-0.5, -0.125], np.float32), (d_sae, 1))})
    _json(ckpt / "logit_effects.json", {"tokens": {"2838": "features", "4275": "models", "1996": "the", "1997": "of"}})
    _json(ckpt / "probe.json", {
        "labels": ["noun", "verb"], "split": "test", "n_examples": 480,
        "per_label": {"noun": [{"latent": LATENT, "ap": 0.875, "f1": 0.8, "threshold": 0.1},
                               {"latent": 1, "ap": 0.5, "f1": 0.4, "threshold": 0.2}],
                      "verb": [{"latent": 3, "ap": 0.625, "f1": 0.6, "threshold": 0.3}]},
        "linear_probe": {"noun": {"test_ap": 0.9375, "test_accuracy": 0.8125, "n_nonzero": 12},
                         "verb": {"test_ap": 0.71875, "test_accuracy": 0.6875, "n_nonzero": 9}}})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """(the analysed run, a copy with every optional analysis file added)."""
    plain = shared_runs.analysed_lm_run(tmp_path_factory)
    full = tmp_path_factory.mktemp("sections") / "run"
    shutil.copytree(plain, full)
    (ckpt,) = [p for p in full.iterdir() if (p / "cfg.json").is_file()]
    write_fixtures(ckpt)
    return plain, full


def _app(monkeypatch: pytest.MonkeyPatch, run: Path, **params: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SAE_VIEWER_RUN", str(run))
    at = AppTest.from_file(str(APP), default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _ckpt(run: Path) -> Path:
    (ckpt,) = [p for p in run.iterdir() if (p / "cfg.json").is_file()]
    return ckpt


OPTIONAL = ("Examples across activation quantiles", "Decoder neighbours", "Co-occurring latents", "Logit effects",
            "Probe labels predicted")


def test_feature_page_sections_from_their_files(monkeypatch, runs) -> None:
    _, run = runs
    ckpt = _ckpt(run)
    d_sae = json.loads((ckpt / "cfg.json").read_text())["d_sae"]
    at = _app(monkeypatch, run, page="Features", sae=ckpt.name, latent=str(LATENT))
    assert [n.value for n in at.number_input if n.label == "latent"] == [LATENT]  # from the link's query
    subheaders = [s.value for s in at.subheader]
    assert f"Top examples of latent {LATENT}" in subheaders
    for title in OPTIONAL:
        assert title in subheaders
    md = "\n".join(m.value for m in at.markdown)
    link = f"?page=Features&sae={ckpt.name}&latent="
    assert f"[{(LATENT + 1) % d_sae}]({link}{(LATENT + 1) % d_sae}) — cosine 0.910" in md
    assert f"[{(LATENT + 2) % d_sae}]({link}{(LATENT + 2) % d_sae}) — cosine 0.820" in md
    assert "latent=-1" not in md  # empty (-1) slots are not listed
    assert f"[{(LATENT + 7) % d_sae}]({link}{(LATENT + 7) % d_sae}) — 42 tokens together, Jaccard 0.375, PMI 1.25" in md
    expanders = [e.label for e in at.expander]
    assert expanders == ["50%–100% of the max activation (2 examples)", "25%–50% of the max activation (2 examples)",
                         "0%–25% of the max activation (1 example)"]
    frames = [f.value for f in at.dataframe]
    promoted = next(f for f in frames if "promoted token" in f.columns)
    assert list(promoted["promoted token"]) == ["features", "models"] and list(promoted["logit"]) == [0.5, 0.25]
    probe = next(f for f in frames if "label" in f.columns and "ap" in f.columns)
    assert list(probe["label"]) == ["noun"] and float(probe["ap"][0]) == 0.875
    captions = [c.value for c in at.caption]
    assert any(c.startswith("Statistics of this latent: ") and "tokens" in c for c in captions)
    assert "Quantile examples: an unrecorded number of tokens of the `val` split" in captions
    assert "Probe: 480 examples of the `test` split" in captions
    assert any("tokens analysed (< 20,000)" in w.value for w in at.warning)  # a tiny run: noisy numbers


def test_sections_absent_without_their_files(monkeypatch, runs, tmp_path: Path) -> None:
    plain, _ = runs
    bare = tmp_path / "run"  # without the optional files, even where `sae analyze` writes some by default
    shutil.copytree(plain, bare, ignore=shutil.ignore_patterns(
        "quantile_examples.*", "neighbours.*", "cooccurrence.*", "logit_effects.*", "probe.json"))
    at = _app(monkeypatch, bare, page="Features", latent=str(LATENT))
    subheaders = [s.value for s in at.subheader]
    assert f"Top examples of latent {LATENT}" in subheaders
    assert not set(OPTIONAL) & set(subheaders)


def test_logit_effects_skipped(monkeypatch, runs, tmp_path: Path) -> None:
    _, run = runs
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    _json(_ckpt(copy) / "logit_effects.json", {"skipped": "the model has no unembedding"})
    at = _app(monkeypatch, copy, page="Features", latent=str(LATENT))
    assert any(m.value == "Skipped: the model has no unembedding" for m in at.markdown)


def test_overview_probe_summary(monkeypatch, runs) -> None:
    _, run = runs
    at = _app(monkeypatch, run)
    frame = next(f.value for f in at.dataframe if "test_ap" in f.value.columns)
    assert list(frame["label"]) == ["noun", "verb"] and list(frame["test_ap"]) == [0.9375, 0.71875]
    assert list(frame["best latent"]) == [LATENT, 3]


def test_search_by_token_matches_brute_force(monkeypatch, runs) -> None:
    from safetensors.numpy import load_file

    plain, _ = runs
    ckpt = _ckpt(plain)
    meta = json.loads((ckpt / "top_examples.json").read_text())
    vocab = json.loads((Path(meta["cache"]) / "vocab.json").read_text())
    top = load_file(str(ckpt / "top_examples.safetensors"))
    word = "features"
    ids = [i for i, piece in enumerate(vocab) if piece in (word, "##" + word)]
    scores = {}
    for latent in range(top["token_ids"].shape[0]):  # dense reference: every slot of every window
        best = 0.0
        for ex in range(top["token_ids"].shape[1]):
            for pos in range(top["token_ids"].shape[2]):
                a = abs(float(top["token_acts"][latent, ex, pos]))
                if top["token_ids"][latent, ex, pos] in ids and a > 0:
                    best = max(best, a)
        if best > 0:
            scores[latent] = best
    expected = sorted(scores, key=lambda i: (-scores[i], i))[:50]
    assert expected, "the fixture run's top examples never fire on 'features'"
    at = _app(monkeypatch, plain, page="Search by token")
    at.text_input[0].input(word).run()
    assert not at.exception, at.exception
    listing = next(m.value for m in at.markdown if "max |act|" in m.value)
    found = [int(x) for x in re.findall(r"latent \[(\d+)\]", listing)]
    assert found == expected
    assert f"&latent={expected[0]})" in listing
    at.text_input[0].input("zzzqqq").run()
    assert any("is not a token" in w.value for w in at.warning)


def test_page_shows_new_numbers_after_files_are_rewritten(monkeypatch, runs, tmp_path: Path) -> None:
    """Re-analysing under an open viewer: the next run of the page shows the new files only."""
    from safetensors.numpy import load_file

    _, run = runs
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ckpt = _ckpt(copy)
    at = _app(monkeypatch, copy, page="Features", latent=str(LATENT))
    stats = load_file(str(ckpt / "feature_stats.safetensors"))
    old = [m.value for m in at.metric]
    assert old[0] == f"{stats['frequency'][LATENT]:.2e}"
    # a new analysis: every number of this latent and the token count change
    stats["frequency"][LATENT], stats["mean_activation"][LATENT], stats["max_activation"][LATENT] = 0.123, 4.5, 6.75
    _save(ckpt / "feature_stats.safetensors", stats)
    summary = json.loads((ckpt / "feature_stats.json").read_text())
    _json(ckpt / "feature_stats.json", {**summary, "n_tokens": 54321, "split": "val"})
    for name in ("top_examples.json", "quantile_examples.json"):  # every file of the page: enough tokens now
        _json(ckpt / name, {**json.loads((ckpt / name).read_text()), "n_tokens": 54321, "split": "val"})
    top = load_file(str(ckpt / "top_examples.safetensors"))
    top["values"][LATENT] = np.where(top["rows"][LATENT] >= 0, 9.875, 0.0)
    _save(ckpt / "top_examples.safetensors", top)
    at.run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric] == ["1.23e-01", "4.500", "6.750"]
    assert "Statistics of this latent: 54321 tokens of the `val` split" in [c.value for c in at.caption]
    assert not any("tokens analysed" in w.value for w in at.warning)
    contexts = [m.value for m in at.markdown if 'class="ctx"' in m.value]
    assert contexts and all("<b>9.875</b>" in c for c in contexts[: int((top["rows"][LATENT] >= 0).sum())])


def test_consistent_read_retries_when_a_file_changes_during_it(tmp_path: Path) -> None:
    from sae_viewer import snapshot

    (tmp_path / "a.json").write_text("1")
    calls = []

    def read() -> str:
        value = (tmp_path / "a.json").read_text()
        calls.append(value)
        if len(calls) == 1:  # an analysis replaces the file while the page reads it
            _json(tmp_path / "a.json", 2)
        return value

    stamp, value = snapshot.consistent(read, tmp_path, ["a.json", "b.json"], pause_s=0)
    assert value == "2" and calls == ["1", "2"]
    assert stamp == snapshot.stamp(tmp_path, ["a.json", "b.json"]) and dict(stamp)["b.json"] is None

    def always_changing() -> int:
        _json(tmp_path / "a.json", len(calls))
        calls.append("x")
        return 0

    with pytest.raises(snapshot.ChangingFilesError, match="changed during every one of 3 reads"):
        snapshot.consistent(always_changing, tmp_path, ["a.json"], tries=3, pause_s=0)


def test_page_follows_a_real_reanalysis(monkeypatch, runs, tmp_path: Path, run_cli) -> None:
    """`sae analyze` on another split (val; all rows is the default) under an open page: frequency, token count and top examples
    all switch to the new analysis on the next run of the page."""
    from safetensors.numpy import load_file

    plain, _ = runs
    copy = tmp_path / "run"
    shutil.copytree(plain, copy)
    ckpt = _ckpt(copy)
    at = _app(monkeypatch, copy, page="Features", latent=str(LATENT))
    before = json.loads((ckpt / "feature_stats.json").read_text())["n_tokens"]
    code, _, err = run_cli("analyze", str(copy), "--only", "feature-stats", "--only", "top-examples",
                           "--option", "split=val", "--k", "4", "-q")
    assert code == 0, err
    after = json.loads((ckpt / "feature_stats.json").read_text())["n_tokens"]
    assert after != before  # the validation split: fewer tokens than all rows (the default)
    stats = load_file(str(ckpt / "feature_stats.safetensors"))
    top = load_file(str(ckpt / "top_examples.safetensors"))
    at.run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric] == [f"{stats['frequency'][LATENT]:.2e}", f"{stats['mean_activation'][LATENT]:.3f}",
                                            f"{stats['max_activation'][LATENT]:.3f}"]
    assert any(c.value.startswith(f"Statistics of this latent: {after} tokens") for c in at.caption)
    shown = [float(re.search(r"<b>([0-9.]+)</b>", m.value).group(1)) for m in at.markdown if 'class="ctx"' in m.value]
    kept = top["values"][LATENT][top["rows"][LATENT] >= 0]
    assert shown[: len(kept)] == [float(f"{v:.3f}") for v in kept]  # the top examples come first (quantile bands follow)
