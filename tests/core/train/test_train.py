"""The multi-SAE trainer: banks equal independent SAEs, exact resume, CLI, sweeps, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.stores import gaussian_cache
from sae_core.checkpoint import find_checkpoints, load_sae
from sae_core.protocols import ActivationBatch, CacheMetadata
from sae_core.stores import open_writer


def _train_args(cache: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(cache), "--out", str(out), "--batch-size", "200", "--log-every", "5", "-q", *extra]


def test_resume_is_bit_exact(tmp_path: Path) -> None:
    from sae_core.train import TrainConfig, expand, run_training

    cache = gaussian_cache(tmp_path / "c")

    def config(out: str) -> TrainConfig:
        return expand(str(cache), 16, {"layer": 1, "batch_size": 128}, {"arch": ["topk", "jumprelu"], "k": 4, "exp_factor": 2},
                      {"steps": 40, "checkpoint_every": 7, "log_every": 5}, out)

    straight = run_training(config(str(tmp_path / "a")), progress=False)
    run_training(config(str(tmp_path / "b")), progress=False, stop_after=17)  # "interrupted" mid-epoch
    assert not (tmp_path / "b" / "sweep.json").exists()
    cfg = TrainConfig.from_json(json.loads((tmp_path / "b" / "config.json").read_text()))
    resumed = run_training(cfg, progress=False, resume=True)
    from safetensors.torch import load_file

    for sub in ("topk-k4", "jumprelu"):
        names = [p.name for p in straight.iterdir() if p.is_dir() and p.name.startswith(sub)]
        assert names, sub
        a = load_file(str(straight / names[0] / "sae.safetensors"))
        b = load_file(str(resumed / names[0] / "sae.safetensors"))
        for k in a:
            assert torch.equal(a[k], b[k]), (sub, k)
        lines_a = (straight / names[0] / "metrics.jsonl").read_text().splitlines()
        lines_b = (resumed / names[0] / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["fvu"] for x in lines_a] == [json.loads(x)["fvu"] for x in lines_b]


def test_cli_single_sae_end_to_end(run_cli, tmp_path: Path) -> None:
    cache = gaussian_cache(tmp_path / "c")
    out = tmp_path / "run"
    code, stdout, err = run_cli(*_train_args(cache, out, "--layer", "-1", "--arch", "topk", "--k", "4",
                                             "--exp-factor", "4", "--lr", "1e-3", "--steps", "30"))
    assert code == 0, err
    (ckpt,) = find_checkpoints(out)
    cfg = json.loads((ckpt / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["d_sae"] == 64 and cfg["source"]["layer"] == "l1"
    assert cfg["normalization"]["folded"] and cfg["metrics"]["l0"] <= 4
    lines = [json.loads(x) for x in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [5, 10, 15, 20, 25, 30]
    assert {"fvu", "l0", "dead_frac", "dense_frac", "lr", "mse", "auxk"} <= set(lines[-1])
    assert lines[-1]["fvu"] < lines[0]["fvu"]
    sae = load_sae(ckpt)
    from sae_core.stores import open_reader

    acts, _ = open_reader(cache).read_examples(0, 500, layers=[1])
    x = acts[:, 0, 0]
    with torch.no_grad():
        recon = sae(x)
    fvu = ((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert abs(float(fvu) - cfg["metrics"]["fvu"]) < 0.15  # the folded checkpoint works on raw activations
    code, stdout, _ = run_cli("info", str(out))
    assert code == 0 and json.loads(stdout)["kind"] == "run"


def test_cli_sweep_grid_and_groups(run_cli, tmp_path: Path) -> None:
    cache = gaussian_cache(tmp_path / "c")
    sweep = tmp_path / "grid.toml"
    sweep.write_text('[data]\nlayer = [0, 1]\n[train]\nsteps = 12\n[sae]\narch = "topk"\nk = [2, 4]\nexp_factor = [2, 4]\nlr = 1e-3\n')
    out = tmp_path / "sweep"
    code, _, err = run_cli(*_train_args(cache, out, "--sweep", str(sweep)))
    assert code == 0, err
    doc = json.loads((out / "sweep.json").read_text())
    assert len(doc["saes"]) == 8
    assert {(s["layer"], s["hyper"]["k"], s["d_sae"]) for s in doc["saes"]} == {
        (layer, k, d) for layer in ("l0", "l1") for k in (2, 4) for d in (32, 64)
    }
    assert sorted(p.name for p in (out / "state").iterdir()) == ["group-0", "group-1"]
    assert all(s["final"]["step"] == 12 for s in doc["saes"])


def test_cli_bad_inputs(run_cli, tmp_path: Path) -> None:
    cache = gaussian_cache(tmp_path / "c")
    out = tmp_path / "r"
    cases = [
        (["--arch", "nope"], "unknown architecture 'nope'; installed: batchtopk, gated, jumprelu, matryoshka, relu, signed-topk, topk"),
        (["--arch", "topk", "--k", "500", "--exp-factor", "2"], "k=500 must be between 1 and d_sae=32"),
        (["--layer", "7"], "layer index 7 is out of range"),
        (["--layer", "resid"], "layer 'resid' is not in cache"),
        (["--tokens", "cls"], "has no 'cls' tokens"),
        (["--arch", "relu", "--k", "4"], "unknown key 'k' for arch 'relu'"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(*_train_args(cache, out, "--steps", "2", *extra))
        assert code == 1 and message in err, (extra, err)
        assert "Traceback" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[sae]\nkk = [1, 2]\n")
    code, _, err = run_cli(*_train_args(cache, out, "--sweep", str(bad)))
    assert code == 1 and "unknown key 'kk'" in err
    bad.write_text("[model]\nx = 1\n")
    code, _, err = run_cli(*_train_args(cache, out, "--sweep", str(bad)))
    assert code == 1 and "unknown table [model]" in err
    code, _, err = run_cli(*_train_args(tmp_path / "nothing", out))
    assert code == 1 and "does not exist" in err
    code, _, err = run_cli(*_train_args(cache, out, "--batch-size", "100000", "--steps", "2"))
    assert code == 1 and "fewer than one batch" in err


def test_resume_with_other_cache_dimension_is_an_error(run_cli, tmp_path: Path) -> None:
    from sae_core.train import TrainConfig, expand, run_training

    cache = gaussian_cache(tmp_path / "c")
    out = tmp_path / "r"
    run_training(expand(str(cache), 16, {"batch_size": 100}, {"k": 2, "exp_factor": 2}, {"steps": 10}, str(out)),
                 progress=False, stop_after=3)
    other = gaussian_cache(tmp_path / "c2", d=8, seed=1)
    code, _, err = run_cli("train", "--resume", "--out", str(out), "--data", str(other), "-q")
    assert code == 1
    assert "was trained on d_model=16" in err and "has d_model=8" in err
    assert TrainConfig.from_json(json.loads((out / "config.json").read_text())).train.steps == 10


def test_empty_cache_is_an_error(run_cli, tmp_path: Path) -> None:
    meta = CacheMetadata(adapter="t", model="m", layers=["l"], d_model=4, dtype="float32", tokens_per_example=1,
                         token_kinds=["token"], dataset={"spec": "x"})
    open_writer(tmp_path, meta)  # metadata written, no shards
    code, _, err = run_cli(*_train_args(tmp_path / meta.fingerprint(), tmp_path / "r", "--steps", "2"))
    assert code == 1 and "has 0 'all' samples" in err


@pytest.mark.slow
def test_topk_recovers_planted_dictionary(tmp_path: Path) -> None:
    """256 true unit features in d=128, 5 active per sample: TopK finds >= 90% (cos > 0.9), FVU < 0.1."""
    from sae_core.train import expand, run_training

    d, n_true, n = 128, 256, 120_000
    gen = torch.Generator().manual_seed(0)
    true = torch.randn(n_true, d, generator=gen)
    true /= true.norm(dim=1, keepdim=True)
    meta = CacheMetadata(adapter="synthetic", model="planted", layers=["x"], d_model=d, dtype="float32",
                         tokens_per_example=1, token_kinds=["token"], dataset={"spec": "planted"})
    w = open_writer(tmp_path / "c", meta)
    for lo in range(0, n, 20_000):
        idx = torch.stack([torch.randperm(n_true, generator=gen)[:5] for _ in range(20_000)])  # (m, 5)
        coef = torch.rand(20_000, 5, generator=gen) + 0.5
        x = (coef[..., None] * true[idx]).sum(1)  # (m, d)
        w.write(ActivationBatch(acts=x[:, None, None, :], example_ids=np.arange(lo, lo + 20_000)))
    cache = w.close()
    cfg = expand(str(cache), d, {"batch_size": 1024}, {"arch": "topk", "k": 8, "d_sae": 512, "lr": 2e-3},
                 {"steps": 2000, "log_every": 100, "dead_tokens": 50_000}, str(tmp_path / "run"))
    run = run_training(cfg, progress=False)
    (ckpt,) = find_checkpoints(run)
    sae = load_sae(ckpt)
    learned = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    max_cos = (true @ learned.T).max(dim=1).values
    recovered = float((max_cos > 0.9).float().mean())
    fvu = json.loads((ckpt / "cfg.json").read_text())["metrics"]["fvu"]
    assert recovered >= 0.9, f"recovered {recovered:.2%} (fvu {fvu:.3f})"
    assert fvu < 0.1, fvu
