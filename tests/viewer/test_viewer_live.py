"""The viewer's "Your input" page (features of a user's text or image, computed only when asked)
and the ablation results on a feature's page, driven with streamlit.testing's AppTest."""

from __future__ import annotations

import io
import json
from pathlib import Path

import helpers.shared_runs as shared_runs
import pytest
from sae_core.checkpoint import find_checkpoints

APP = Path(__file__).resolve().parents[2] / "packages" / "sae-viewer" / "src" / "sae_viewer" / "app.py"


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every model the app builds (through the adapter of the SAE's cache), by model id."""
    import sae_core.inference.loading as loading
    import streamlit as st

    st.cache_resource.clear()  # a model cached by an earlier test would hide a load
    calls: list[str] = []
    real = loading.adapter_for_cache

    def counted(meta, device="cpu"):
        calls.append(meta.model)
        return real(meta, device)

    monkeypatch.setattr(loading, "adapter_for_cache", counted)
    return calls


def _app(monkeypatch: pytest.MonkeyPatch, run: Path, **params: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SAE_VIEWER_RUN", str(run))
    at = AppTest.from_file(str(APP), default_timeout=180)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def test_text_input_runs_the_model_only_when_submitted(monkeypatch, tmp_path_factory, loads, run_cli) -> None:
    _, run = shared_runs.lm_run(tmp_path_factory)
    at = _app(monkeypatch, run)
    at.sidebar.radio[0].set_value("Features").run()
    at.sidebar.radio[0].set_value("Your input").run()
    assert not at.exception, at.exception
    assert at.header[0].value == "Your input" and loads == []  # the pages load no model by themselves
    text = "sparse autoencoders find features"
    at.text_area[0].input(text)
    at.run()
    assert loads == []  # typing is not submitting (a form: the text is sent with the button)
    at.text_area[0].input(text)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert len(loads) == 1, ([e.value for e in at.error], [w.value for w in at.warning], at.button)
    (ckpt,) = find_checkpoints(run)
    code, out, err = run_cli("features", str(ckpt), "--text", text, "--top", "5", "--json")
    assert code == 0, err
    expected = json.loads(out)["tokens"]
    loads.clear()  # that was the CLI's load
    table = at.dataframe[0].value
    assert list(table["token"]) == [t["token"] for t in expected]
    assert list(table["top features"]) == ["  ".join(f"{i}:{v:.3f}" for i, v in t["features"]) for t in expected]
    assert any('class="ctx"' in m.value and "sparse" in m.value for m in at.markdown)
    at.selectbox(key=f"live:{ckpt}:feature").set_value(at.selectbox(key=f"live:{ckpt}:feature").options[1]).run()
    assert not at.exception, at.exception
    assert loads == [] and at.dataframe  # the result stays; the model is not loaded again


def test_image_upload_shows_a_heatmap(monkeypatch, tmp_path_factory, loads) -> None:
    from sae_core.datasets import open_dataset

    _, run = shared_runs.vit_runs(tmp_path_factory)["timm"]
    at = _app(monkeypatch, run)
    at.sidebar.radio[0].set_value("Your input").run()
    assert not at.exception and loads == []
    buf = io.BytesIO()
    open_dataset("samples", "image", n=12)[2].data.save(buf, format="PNG")
    at.file_uploader[0].upload("photo.png", buf.getvalue(), "image/png")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert len(loads) == 1 and len(at.get("image")) == 1
    assert len(at.dataframe[0].value) == 16  # one row per patch of the 4x4 grid


def test_feature_page_shows_ablation(monkeypatch, tmp_path_factory, run_cli) -> None:
    _, run = shared_runs.lm_run(tmp_path_factory)
    (ckpt,) = find_checkpoints(run)
    code, _, err = run_cli("ablate", str(ckpt), "--features", "0,1", "--each", "--tokens", "64", "--json")
    assert code == 0, err
    code, _, err = run_cli("ablate", str(ckpt), "--features", "0,1", "--tokens", "64", "--json")
    assert code == 0, err
    at = _app(monkeypatch, run, page="Features", latent="0")  # latent 0, whose ablation was run
    assert not at.exception, at.exception
    lines = [m.value for m in at.markdown if m.value.startswith("Ablating")]
    result = next(r for r in json.loads((ckpt / "ablation.json").read_text())["results"] if r["features"] == [0])
    assert lines[0].startswith("Ablating latent 0 (") and f"{result['ce_delta']:+.4f}" in lines[0]
    assert lines[1].startswith("Ablating latents 0, 1 together")
