"""Dead latents are counted in short runs (the window scales with the run), AuxK runs on them,
and training, sweep.json and the analyses agree on which latents never fire."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.stores import gaussian_cache
from sae_core.checkpoint import find_checkpoints, load_sae
from sae_core.stores import open_reader
from sae_core.train.config import TrainSettings

PLANTED = [0, 3, 7, 20, 41, 63]  # latents whose encoder bias is set so low they can never fire


def test_dead_window_scales_with_the_run() -> None:
    assert TrainSettings(steps=250).dead_window(1024) == 25_600  # the quickstart: a tenth of its tokens
    assert TrainSettings(steps=100_000).dead_window(4096) == 1_000_000  # long runs: as before
    assert TrainSettings(steps=3).dead_window(100) == 100  # at least one batch
    assert TrainSettings(steps=250, dead_tokens=5000).dead_window(1024) == 5000  # set by hand


def test_planted_dead_latents_are_counted_and_auxk_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sae_core.analyses.runner import analyse_run
    from sae_core.archs.topk import TopK
    from sae_core.train import expand, run_training

    built = TopK.build_bank.__func__

    def planted_bank(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        bank = built(cls, *args, **kwargs)
        with torch.no_grad():
            bank.b_enc[:, PLANTED] = -1e4  # (n, d_sae): no input reaches the top k, and ReLU keeps AuxK's at 0
        return bank

    monkeypatch.setattr(TopK, "build_bank", classmethod(planted_bank))
    cache = gaussian_cache(tmp_path / "c")
    steps, batch = 60, 200
    cfg = expand(str(cache), 16, {"layer": 1, "batch_size": batch, "val_fraction": 0.0},
                 {"arch": "topk", "k": 4, "exp_factor": 4}, {"steps": steps, "log_every": 5}, str(tmp_path / "run"))
    run = run_training(cfg, progress=False)
    (ckpt,) = find_checkpoints(run)
    log = [json.loads(x) for x in (ckpt / "metrics.jsonl").read_text().splitlines()]
    window = steps * batch // 10
    assert all(r["dead_window_tokens"] == window for r in log)
    late = [r for r in log if r["samples"] > window]
    assert late and all(r["dead_frac"] >= len(PLANTED) / 64 for r in late)
    assert all(r["auxk"] > 0 for r in late), "AuxK did not run on the dead latents"
    early = [r for r in log if r["samples"] < window]
    assert early and all(r["dead_frac"] == 0 for r in early)  # nothing is dead before a window has passed
    final = json.loads((run / "sweep.json").read_text())["saes"][0]["final"]
    assert final["dead_frac"] == log[-1]["dead_frac"] and final["dead_window_tokens"] == window

    analyse_run(run, only=["feature-stats"], progress=False, options={"split": "all"})
    stats = json.loads((ckpt / "feature_stats.json").read_text())
    # brute force: encode every token of the cache with the saved checkpoint, count never-firing latents
    reader = open_reader(cache)
    acts, _ = reader.read_examples(0, reader.n_examples, layers=[1])
    codes = load_sae(ckpt).encode(acts[:, 0, 0].float())  # (n_tokens, d_sae)
    never = (codes != 0).sum(0) == 0
    assert never[PLANTED].all()
    assert stats["n_tokens"] == codes.shape[0]
    assert stats["dead_frac"] == pytest.approx(float(never.float().mean()))
    assert stats["mean_l0"] == pytest.approx(float((codes != 0).sum(1).float().mean()), rel=1e-6)
    assert np.isclose(stats["dead_frac"], never.float().mean().item())
