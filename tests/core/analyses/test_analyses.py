"""Analyses against brute-force computations on a small cache; `sae analyze` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_core.checkpoint import find_checkpoints, load_sae
from sae_core.protocols import ActivationBatch, CacheMetadata
from sae_core.stores import open_reader, open_writer
from sae_core.train import expand, run_training
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("an")
    meta = CacheMetadata(adapter="t", model="m", layers=["a", "b"], d_model=12, dtype="float32", tokens_per_example=4,
                         token_kinds=["cls", "patch", "patch", "patch"], dataset={"spec": "synthetic"})
    gen = torch.Generator().manual_seed(0)
    w = open_writer(root / "c", meta, shard_examples=100)
    for lo in range(0, 600, 50):
        valid = np.ones((50, 4), dtype=bool)
        valid[:, 3] = np.arange(lo, lo + 50) % 5 != 0  # some invalid tokens
        w.write(ActivationBatch(acts=torch.randn(50, 2, 4, 12, generator=gen).exp(), example_ids=np.arange(lo, lo + 50) * 3,
                                valid=valid))
    cache = w.close()
    cfg = expand(str(cache), 12, {"layer": "b", "tokens": "patch", "batch_size": 64}, {"arch": "topk", "k": 3, "d_sae": 24},
                 {"steps": 30}, str(root / "run"))
    return cache, run_training(cfg, progress=False)


def _brute(cache: Path, ckpt: Path) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    reader = open_reader(cache)
    acts, index = reader.read_examples(0, reader.n_examples, layers=[1])
    sae = load_sae(ckpt)
    with torch.no_grad():
        f = sae.encode(acts[:, 0])  # (n, T, d_sae)
    keep = torch.from_numpy(index["valid"].astype(bool))
    keep[:, 0] = False  # the SAE was trained on patch tokens only
    return f * keep[..., None], index, keep


def test_analyze_cli_matches_brute_force(run_cli, trained) -> None:
    cache, run = trained
    code, out, err = run_cli("analyze", str(run), "--k", "5", "--option", "split=all", "-q")
    assert code == 0, err
    (ckpt,) = find_checkpoints(run)
    f, _, keep = _brute(cache, ckpt)
    stats = load_file(str(ckpt / "feature_stats.safetensors"))
    tokens = f[keep]  # (m, d_sae)
    torch.testing.assert_close(stats["frequency"], (tokens > 0).float().mean(0))
    torch.testing.assert_close(stats["max_activation"], tokens.max(0).values)
    fired = (tokens > 0).sum(0).clamp_min(1)
    torch.testing.assert_close(stats["mean_activation"], tokens.sum(0) / fired, rtol=1e-4, atol=1e-5)
    assert int(stats["act_hist_counts"].sum()) == int((tokens > 0).sum())
    top = load_file(str(ckpt / "top_examples.safetensors"))
    score = f.amax(dim=1)  # (n, d_sae)
    for latent in range(f.shape[-1]):
        vals, rows = score[:, latent].topk(5)
        torch.testing.assert_close(top["values"][latent], vals * (vals > 0))
        good = vals > 0
        assert top["rows"][latent][good].tolist() == rows[good].tolist()
        assert top["examples"][latent][good].tolist() == (rows[good] * 3).tolist()
        torch.testing.assert_close(top["token_acts"][latent][good].float(), f[rows[good], :, latent].half().float())
    recon = json.loads((ckpt / "reconstruction.json").read_text())
    assert recon["split"] == "all" and recon["n_rows"] == open_reader(cache).n_examples
    assert json.loads(out)[ckpt.name]["top-examples"]["k"] == 5
    meta = json.loads((ckpt / "top_examples.json").read_text())
    assert meta["modality"] == "image" and meta["dataset"]["spec"] == "synthetic"


def test_metrics_read_the_validation_examples_descriptions_all_rows(run_cli, trained) -> None:
    """Default metrics measure the SAE on the examples its training held out (cfg.json `val`):
    the rows whose dataset example falls in the validation split, all of their tokens; the
    descriptive analyses (feature statistics) read every row, and say so."""
    from sae_core.validation_split import ExampleSplit

    cache, run = trained
    code, _, err = run_cli("analyze", str(run), "--only", "reconstruction", "--only", "feature-stats", "-q")
    assert code == 0, err
    (ckpt,) = find_checkpoints(run)
    val = json.loads((ckpt / "cfg.json").read_text())["val"]
    assert val["fraction"] == 0.02
    f, index, keep = _brute(cache, ckpt)
    rows = np.flatnonzero(ExampleSplit(val["fraction"], val["seed"]).is_val(index["example"][:, 0]))
    assert 0 < len(rows) < 0.1 * len(index)
    recon = json.loads((ckpt / "reconstruction.json").read_text())
    assert recon["split"] == "val" and recon["n_rows"] == len(rows)
    x = open_reader(cache).read_examples(0, len(index), layers=[1])[0][:, 0][rows][keep[rows]]
    with torch.no_grad():
        xh = load_sae(ckpt)(x)
    fvu = float(((xh - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert abs(recon["fvu"] - fvu) < 1e-4 and recon["n_tokens"] == len(x)
    stats = load_file(str(ckpt / "feature_stats.safetensors"))
    torch.testing.assert_close(stats["frequency"], (f[keep] > 0).float().mean(0))
    summary = json.loads((ckpt / "feature_stats.json").read_text())
    assert summary["split"] == "all" and summary["n_rows"] == len(index) and summary["n_tokens"] == int(keep.sum())


def test_analyze_errors(run_cli, trained, tmp_path: Path) -> None:
    _, run = trained
    code, _, err = run_cli("analyze", str(tmp_path), "-q")
    assert code == 1 and "no SAE checkpoints" in err
    meta = CacheMetadata(adapter="t", model="other", layers=["a"], d_model=5, dtype="float32", tokens_per_example=1,
                         token_kinds=["token"], dataset={"spec": "x"})
    w = open_writer(tmp_path / "c", meta)
    w.write(ActivationBatch(acts=torch.ones(4, 1, 1, 5), example_ids=np.arange(4)))
    other = w.close()
    code, _, err = run_cli("analyze", str(run), "--data", str(other), "-q")
    assert code == 1 and "has d_in=12 but cache" in err and "d_model=5" in err
    code, _, err = run_cli("analyze", str(run), "--only", "nope", "-q")
    assert code == 1 and "unknown analysis 'nope'" in err
