"""`sae quickstart`: the README's main job, shortened (the full run is `uv run sae quickstart runs/demo`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sae_core.checkpoint import find_checkpoints, load_sae


def test_quickstart_end_to_end(run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli("quickstart", str(tmp_path / "demo"), "--steps", "20", "--max-examples", "40", "-q")
    assert code == 0, err
    assert "sae info" in out and "topk-k16" in out and "held-out FVU" in out and "spliced cos" in out
    run = tmp_path / "demo" / "run"
    sweep = json.loads((run / "sweep.json").read_text())
    assert [s["hyper"]["k"] for s in sweep["saes"]] == [16, 32]
    assert all(s["d_sae"] == 8 * 384 for s in sweep["saes"])
    for ckpt in find_checkpoints(run):
        sae = load_sae(ckpt)
        assert sae.cfg.source.model == "sentence-transformers/all-MiniLM-L6-v2"
        assert sae.cfg.source.layer == "encoder.layer.3"  # the hf adapter: a module path
        assert (ckpt / "metrics.jsonl").read_text().strip()
        for name in ("feature_stats.safetensors", "top_examples.safetensors", "reconstruction.json", "downstream.json"):
            assert (ckpt / name).is_file(), name
        down = json.loads((ckpt / "downstream.json").read_text())
        assert 0 < down["embedding_cosine"] <= 1 + 1e-6 and down["cache_rel_error"] < 1e-4  # the hf model re-created
    cache_meta = json.loads(next((tmp_path / "demo" / "cache").glob("*/metadata.json")).read_text())
    assert cache_meta["adapter"] == "hf"


@pytest.mark.slow
def test_readme_table_is_what_the_quickstart_prints(run_cli, tmp_path: Path) -> None:
    """The README's quickstart table is the full quickstart's own output (run/quickstart.txt)."""
    code, _, err = run_cli("quickstart", str(tmp_path / "demo"), "-q")
    assert code == 0, err
    table = (tmp_path / "demo" / "run" / "quickstart.txt").read_text().strip().splitlines()
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("<!-- quickstart-table -->")[1].split("```text\n")[1].split("```")[0].strip().splitlines()
    assert block == table
