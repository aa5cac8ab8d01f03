"""The Streamlit viewer, driven with streamlit.testing's AppTest on small real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.viewer import APP

TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 48, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}}
TINY_LM = {"n_layers": 1, "d_model": 32, "n_ctx": 64, "d_head": 8, "n_heads": 4, "d_mlp": 64, "d_vocab": 30522,
           "act_fn": "gelu", "normalization_type": "LN"}


def _run(run_cli, root: Path, cache_args: list[str]) -> Path:
    code, out, err = run_cli("cache", "--out", str(root / "cache"), "-q", *cache_args)
    assert code == 0, err
    cache = out.strip().splitlines()[-1]
    code, _, err = run_cli("train", "--data", cache, "--out", str(root / "run"), "--arch", "topk", "--k", "4",
                           "--exp-factor", "2", "--steps", "10", "--batch-size", "64", "--log-every", "5", "-q")
    assert code == 0, err
    code, _, err = run_cli("analyze", str(root / "run"), "--k", "4", "-q")
    assert code == 0, err
    return root / "run"


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    from conftest import cli_runner

    root = tmp_path_factory.mktemp("img")
    cfg = root / "tiny_clip_viewer.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    return _run(cli_runner(), root, ["--adapter", "clip", "--model", f"config:{cfg}", "--layers", "-1",
                                     "--data", "samples", "--data-opt", "n=16"])


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    from conftest import cli_runner
    from sae_text.minilm import minilm_dir

    root = tmp_path_factory.mktemp("txt")
    cfg = root / "tiny_lm.json"
    cfg.write_text(json.dumps(TINY_LM))
    corpus = root / "docs.txt"
    corpus.write_text("\n\n".join(["Sparse autoencoders find features in activations of language models."] * 12))
    return _run(cli_runner(), root, ["--adapter", "tlens", "--model", f"config:{cfg}", "--layers", "0",
                                     "--opt", f"tokenizer={minilm_dir()}", "--data", f"text:{corpus}", "--context-size", "16"])


def _app(monkeypatch: pytest.MonkeyPatch, run: Path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SAE_VIEWER_RUN", str(run))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_overview_page(monkeypatch: pytest.MonkeyPatch, image_run: Path) -> None:
    at = _app(monkeypatch, image_run)
    assert at.header[0].value == "Run overview"
    table = at.dataframe[0].value
    assert list(table["name"]) == ["topk-k4"] and "held-out fvu" in table.columns
    assert 0 < float(table["spliced emb. cosine"][0]) <= 1 + 1e-6  # downstream.json of the ViT
    assert "CE recovered" not in table.columns


def test_overview_and_sae_page_show_lm_downstream(monkeypatch: pytest.MonkeyPatch, text_run: Path) -> None:
    at = _app(monkeypatch, text_run)
    table = at.dataframe[0].value
    (ckpt,) = [p for p in text_run.iterdir() if (p / "downstream.json").is_file()]
    result = json.loads((ckpt / "downstream.json").read_text())
    assert float(table["CE recovered"][0]) == pytest.approx(result["ce_loss_recovered"])
    at.sidebar.radio[0].set_value("Features").run()
    assert not at.exception, at.exception
    lines = [m.value for m in at.markdown if m.value.startswith("Downstream")]
    assert lines and "CE loss recovered" in lines[0] and f"{result['ce_clean']:.4f}" in lines[0]


def test_feature_page_images_with_heatmaps(monkeypatch: pytest.MonkeyPatch, image_run: Path) -> None:
    at = _app(monkeypatch, image_run)
    at.sidebar.radio[0].set_value("Features").run()
    assert not at.exception, at.exception
    assert at.header[0].value == "Feature browser"
    assert any("Top examples of latent" in s.value for s in at.subheader)
    assert len(at.get("image")) >= 1  # heatmaps over the original photos
    lines = [m.value for m in at.markdown if m.value.startswith("Downstream")]
    assert lines and "cosine of the final image embedding" in lines[0]
    # no heatmap/image warning; the only one is that this tiny run analysed < 20,000 tokens
    assert [w.value for w in at.warning if "tokens analysed (< 20,000)" not in w.value] == []


def test_feature_page_text_highlighting(monkeypatch: pytest.MonkeyPatch, text_run: Path) -> None:
    at = _app(monkeypatch, text_run)
    at.sidebar.radio[0].set_value("Features").run()
    assert not at.exception, at.exception
    contexts = [m.value for m in at.markdown if 'class="ctx"' in m.value]
    assert contexts and 'class="tok"' in contexts[0] and "features" in "".join(contexts)


def test_missing_run_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, run_cli) -> None:
    at = _app(monkeypatch, tmp_path / "nope")
    assert "is not a run directory" in at.error[0].value
    code, _, err = run_cli("view", str(tmp_path / "nope"))
    assert code == 1 and "is not a directory" in err
