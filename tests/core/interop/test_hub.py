"""`sae upload` / `sae download` with the real huggingface_hub client against a local fake Hub."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.fake_hub import FakeHub
from helpers.stores import gaussian_cache


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from sae_core.train import expand, run_training

    root = tmp_path_factory.mktemp("hubrun")
    cache = gaussian_cache(root / "c", n=2000)
    cfg = expand(str(cache), 16, {"batch_size": 100}, {"arch": "topk", "k": [2, 4], "exp_factor": 2}, {"steps": 6}, str(root / "run"))
    return run_training(cfg, progress=False)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    with FakeHub() as server:
        yield server


def test_upload_download_round_trip_is_byte_identical(run_cli, run: Path, hub: FakeHub, tmp_path: Path) -> None:
    code, out, err = run_cli("upload", str(run), "--repo", "alice/my-saes", "--endpoint", hub.endpoint)
    assert code == 0, err
    assert out.strip().endswith("/alice/my-saes")
    files = hub.repos["alice/my-saes"]["files"]
    assert {"topk-k2/sae.safetensors", "topk-k4/cfg.json", "sweep.json", "README.md"} <= set(files)
    assert not any(p.startswith("state") for p in files)  # training state stays local
    card = files["README.md"].decode()
    assert "library_name: sae" in card and "| `topk-k2` | topk |" in card
    code, _out, err = run_cli("download", "alice/my-saes", "--out", str(tmp_path / "dl"), "--endpoint", hub.endpoint)
    assert code == 0, err
    for sae in ("topk-k2", "topk-k4"):
        for name in ("cfg.json", "sae.safetensors", "metrics.jsonl"):
            assert (tmp_path / "dl" / sae / name).read_bytes() == (run / sae / name).read_bytes()
    from sae_core.checkpoint import load_sae

    assert load_sae(tmp_path / "dl" / "topk-k4").d_sae == 32
    code, _, err = run_cli("download", "alice/my-saes", "--sae", "topk-k2", "--out", str(tmp_path / "one"), "--endpoint", hub.endpoint)
    assert code == 0, err
    assert (tmp_path / "one" / "topk-k2" / "sae.safetensors").is_file() and not (tmp_path / "one" / "topk-k4").exists()


def test_hub_errors(run_cli, run: Path, hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli("download", "alice/nothing-here", "--out", str(tmp_path / "x"), "--endpoint", hub.endpoint)
    assert code == 1 and "not found" in err and "Traceback" not in err
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    code, _, err = run_cli("upload", str(run), "--repo", "alice/other", "--endpoint", hub.endpoint)
    assert code == 1 and ("log in" in err or "HF_TOKEN" in err) and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("upload", str(run), "--repo", "no-slash", "--endpoint", hub.endpoint)
    assert code == 1 and "user/name" in err
