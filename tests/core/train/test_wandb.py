"""`sae train --wandb`: one offline W&B run per SAE, grouped by the sweep, read back from the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.stores import gaussian_cache
from helpers.wandb_records import summarize

pytest.importorskip("wandb")


def test_one_offline_run_per_sae_with_config_metrics_and_artifact(run_cli, tmp_path: Path, monkeypatch) -> None:
    wandb_dir = tmp_path / "wb"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cache = gaussian_cache(tmp_path / "c", n=1000)
    sweep = tmp_path / "grid.toml"
    sweep.write_text('[data]\nlayer = 1\nval_fraction = 0.2\n[train]\nsteps = 10\nwandb_tags = ["seed-test"]\n'
                     'wandb_notes = "from the toml"\n[sae]\narch = "topk"\nk = [2, 4]\nexp_factor = 2\n')
    out = tmp_path / "sweep"
    code, _, err = run_cli("train", "--data", str(cache), "--out", str(out), "--sweep", str(sweep), "--batch-size", "100",
                           "--log-every", "5", "-q", "--wandb-mode", "offline", "--wandb-group", "grp",
                           "--wandb-tags", "a,b", "--wandb-artifact", "--wandb-project", "proj")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["wandb"] and config["wandb_mode"] == "offline" and config["wandb_tags"] == ["a", "b"]
    files = sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2  # one W&B run per SAE
    docs = {d["run"]["name"]: d for d in map(summarize, files)}
    assert sorted(docs) == ["topk-k2", "topk-k4"]
    ids = json.loads((out / "state" / "wandb.json").read_text())
    for name, doc in docs.items():
        assert doc["run"]["id"] == ids[name]
        assert doc["run"]["group"] == "grp" and doc["run"]["project"] == "proj"
        assert doc["run"]["tags"] == ["a", "b"] and doc["run"]["notes"] == "from the toml"
        cfg = doc["config"]
        assert cfg["sae"] == name and cfg["arch"] == "topk" and cfg["d_sae"] == 32
        assert cfg["hyper"]["k"] == int(name[-1]) and cfg["data"]["layer"] == "1" and cfg["train"]["steps"] == 10
        steps = [h["_step"] for h in doc["history"]]
        assert steps == [5, 10]
        logged = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        for h, rec in zip(doc["history"], logged, strict=True):
            assert h["train/fvu"] == pytest.approx(rec["fvu"]) and h["train/l0"] == pytest.approx(rec["l0"])
            assert h["val/fvu"] == pytest.approx(rec["val_fvu"])
        final = json.loads((out / name / "cfg.json").read_text())["metrics"]
        assert doc["summary"]["final/fvu"] == pytest.approx(final["fvu"])
        assert doc["summary"]["final/val_fvu"] == pytest.approx(final["val_fvu"])
        assert doc["artifacts"] == [(f"grp-{name}", "model")]


def test_wandb_flags_are_checked(run_cli, tmp_path: Path) -> None:
    cache = gaussian_cache(tmp_path / "c", n=500)
    code, _, err = run_cli("train", "--data", str(cache), "--out", str(tmp_path / "r"), "--steps", "2", "-q",
                           "--wandb-mode", "sometimes")
    assert code != 0 and "wandb_mode must be online, offline or disabled" in err


def test_resume_continues_the_same_wandb_runs(run_cli, tmp_path: Path, monkeypatch) -> None:
    from sae_core.train import expand, run_training

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")  # as the seeds set it; no --wandb-project
    cache = gaussian_cache(tmp_path / "c", n=600)
    cfg = expand(str(cache), 16, {"layer": 0, "batch_size": 100, "val_fraction": 0.2}, {"arch": "topk", "k": [2, 3], "exp_factor": 2},
                 {"steps": 6, "log_every": 2, "checkpoint_every": 2, "wandb": True, "wandb_mode": "offline"},
                 str(tmp_path / "run"))
    out = run_training(cfg, progress=False, stop_after=2)
    ids = json.loads((out / "state" / "wandb.json").read_text())
    first = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(first) == 2 and not any((out / n / "cfg.json").exists() for n in ids)
    code, _, err = run_cli("train", "--resume", "--out", str(out), "-q", "--wandb-tags", "resumed")  # flags apply on resume
    assert code == 0, err
    assert json.loads((out / "state" / "wandb.json").read_text()) == ids
    docs = [summarize(f) for f in sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))]
    assert len(docs) == 4 and {d["run"]["id"] for d in docs} == set(ids.values())  # the same runs, continued
    assert {d["run"]["project"] for d in docs} == {"from-env"}
    for name, run_id in ids.items():
        steps = [h["_step"] for d in docs if d["run"]["id"] == run_id for h in d["history"]]
        assert sorted(steps) == [2, 4, 6], name
        final = [d["summary"].get("final/fvu") for d in docs if d["run"]["id"] == run_id]
        assert any(f is not None for f in final)
        assert sorted(d["run"]["tags"] for d in docs if d["run"]["id"] == run_id) == [[], ["resumed"]]


def test_disabled_mode_trains_without_wandb_files(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    cache = gaussian_cache(tmp_path / "c", n=500)
    out = tmp_path / "r"
    code, _, err = run_cli("train", "--data", str(cache), "--out", str(out), "--steps", "4", "--batch-size", "100", "-q",
                           "--k", "2", "--exp-factor", "2", "--wandb-mode", "disabled", "--wandb-artifact")
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["train"]["wandb"] is True
    assert not list((tmp_path / "wb").rglob("*.wandb")) and (out / "topk-k2" / "cfg.json").is_file()
