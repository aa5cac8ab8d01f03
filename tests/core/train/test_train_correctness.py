"""The trainer end to end: sweep members equal the same SAE trained alone (through the CLI),
and what cfg.json reports is what the saved checkpoint does (inference mode)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.stores import gaussian_cache
from sae_core.checkpoint import find_checkpoints, load_sae
from sae_core.protocols import ActivationBatch, CacheMetadata
from sae_core.stores import open_reader, open_writer

SWEEPS = {
    "relu": ("l1_coeff = [0.5, 3.0]\nlr = [2e-3, 5e-3]", ["--l1-coeff", "3.0", "--lr", "2e-3"]),
    "topk": ("k = [2, 5]\naux_k = [2, 12]\naux_coeff = 0.1", ["--k", "2", "--hyper", "aux_k=2", "--hyper", "aux_coeff=0.1"]),
    "batchtopk": ("k = [2, 5]\naux_k = [3, 12]\nthreshold_momentum = [0.5, 0.99]",
                  ["--k", "2", "--hyper", "aux_k=3", "--hyper", "threshold_momentum=0.5"]),
    "jumprelu": ("target_l0 = [3.0, 6.0]\nbandwidth = [0.2, 0.6]", ["--target-l0", "3.0", "--hyper", "bandwidth=0.6"]),
    "gated": ("l1_coeff = [0.5, 3.0]\nlr = [2e-3, 5e-3]", ["--l1-coeff", "0.5", "--lr", "5e-3"]),
    "matryoshka": ('k = [2, 4]\nbase = ["topk", "batchtopk"]\nprefixes = [[8, 128], [16, 32, 128]]',
                   ["--k", "2", "--hyper", 'base="batchtopk"', "--hyper", "prefixes=[8, 128]"]),
}
TRAIN = "[train]\nsteps = 24\nlog_every = 3\ndead_tokens = 200\n"  # latents die within a few steps: AuxK runs


def _common(cache: Path) -> list[str]:
    return ["--data", str(cache), "--layer", "1", "--batch-size", "100", "--exp-factor", "8", "-q"]


@pytest.mark.parametrize("arch", list(SWEEPS))
def test_sweep_member_equals_the_same_sae_trained_alone(run_cli, tmp_path: Path, arch: str) -> None:
    from safetensors.torch import load_file

    cache = gaussian_cache(tmp_path / "c")
    swept, alone = SWEEPS[arch]
    grid = tmp_path / "grid.toml"
    lr_line = "" if "lr =" in swept else "lr = 2e-3\n"
    grid.write_text(f'{TRAIN}[sae]\narch = "{arch}"\n{lr_line}{swept}\n')
    code, _, err = run_cli("train", "--out", str(tmp_path / "sweep"), "--sweep", str(grid), *_common(cache))
    assert code == 0, err
    only_train = tmp_path / "train.toml"
    only_train.write_text(TRAIN)
    lr = [] if "--lr" in alone else ["--lr", "2e-3"]
    code, _, err = run_cli("train", "--out", str(tmp_path / "one"), "--sweep", str(only_train), "--arch", arch,
                           *alone, *lr, *_common(cache))
    assert code == 0, err
    (single,) = find_checkpoints(tmp_path / "one")
    cfg = json.loads((single / "cfg.json").read_text())
    members = [p for p in find_checkpoints(tmp_path / "sweep")
               if json.loads((p / "cfg.json").read_text())["hyper"] == cfg["hyper"]
               and json.loads((p / "cfg.json").read_text())["train"]["lr"] == cfg["train"]["lr"]]
    assert len(members) == 1, [p.name for p in find_checkpoints(tmp_path / "sweep")]
    if arch in ("topk", "batchtopk", "matryoshka"):
        log = [json.loads(x) for x in (members[0] / "metrics.jsonl").read_text().splitlines()]
        assert any(r["dead_frac"] > 0 and r["auxk"] > 0 for r in log), "AuxK never ran: the test would not see it"
    a, b = load_file(str(members[0] / "sae.safetensors")), load_file(str(single / "sae.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{arch} {k}")


def _eval_checkpoint(ckpt: Path, cache: Path, layer: int = 1) -> tuple[float, float]:
    """(L0, FVU) of the saved SAE in inference mode on the whole cache (raw activations)."""
    acts, _ = open_reader(cache).read_examples(0, open_reader(cache).n_examples, layers=[layer])
    x = acts[:, 0].reshape(-1, acts.shape[-1]).float()
    sae = load_sae(ckpt)
    with torch.no_grad():
        f = sae.encode(x)
        recon = sae.decode(f)
    fvu = float(((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    return float((f != 0).float().sum(-1).mean()), fvu


def test_batchtopk_saved_checkpoint_fires_k_and_cfg_reports_inference_mode(tmp_path: Path) -> None:
    """A short run (where a lagging running threshold is furthest off): the checkpoint's L0 is
    within 15% of k, cfg.json's L0/FVU are the checkpoint's, metrics.jsonl keeps training-mode
    values under their own names."""
    from sae_core.train import expand, run_training

    cache = gaussian_cache(tmp_path / "c")
    cfg = expand(str(cache), 16, {"layer": 1, "batch_size": 100},
                 {"arch": "batchtopk", "k": [2, 4], "exp_factor": 4, "lr": 3e-3}, {"steps": 40, "log_every": 5},
                 str(tmp_path / "run"))
    for ckpt in find_checkpoints(run_training(cfg, progress=False)):
        k = json.loads((ckpt / "cfg.json").read_text())["hyper"]["k"]
        metrics = json.loads((ckpt / "cfg.json").read_text())["metrics"]
        l0, fvu = _eval_checkpoint(ckpt, cache)
        assert abs(l0 - k) <= 0.15 * k, (k, l0)
        assert abs(metrics["l0"] - l0) <= 0.08 * l0 and abs(metrics["fvu"] - fvu) <= 0.08 * fvu, (metrics, l0, fvu)
        log = [json.loads(x) for x in (ckpt / "metrics.jsonl").read_text().splitlines()]
        assert all({"train_l0", "train_fvu", "l0", "fvu"} <= set(r) for r in log)
        assert any(abs(r["l0"] - r["train_l0"]) > 0.05 for r in log)  # the two modes really are measured apart


def planted_cache(root: Path, d: int = 48, n_true: int = 256, active: int = 6, n: int = 40_000) -> Path:
    """Sparse sums of planted unit features: a dictionary an SAE can find."""
    gen = torch.Generator().manual_seed(0)
    true = torch.randn(n_true, d, generator=gen)
    true /= true.norm(dim=1, keepdim=True)
    meta = CacheMetadata(adapter="synthetic", model=f"planted{d}", layers=["x"], d_model=d, dtype="float32",
                         tokens_per_example=1, token_kinds=["token"], dataset={"spec": "planted"})
    w = open_writer(root, meta)
    for lo in range(0, n, 10_000):
        idx = torch.rand(10_000, n_true, generator=gen).topk(active, dim=-1).indices  # distinct features per row
        x = ((torch.rand(10_000, active, generator=gen) + 0.5)[..., None] * true[idx]).sum(1)
        w.write(ActivationBatch(acts=x[:, None, None, :], example_ids=np.arange(lo, lo + 10_000)))
    return w.close()


def test_jumprelu_target_mode_reaches_its_target_and_penalty_mode_is_sparse(tmp_path: Path) -> None:
    """On planted sparse data: target_l0 = 8 ends within 25% of 8 on the saved checkpoint; the
    default L0 coefficient alone gives a sparse SAE. (The defaults on real MiniLM activations are
    checked by test_minilm_sparsity.py.)"""
    from sae_core.train import expand, run_training

    cache = planted_cache(tmp_path / "c")
    run = tmp_path / "run"
    cfg = expand(str(cache), 48, {"batch_size": 256}, {"arch": "jumprelu", "d_sae": 384, "lr": 3e-3},
                 {"steps": 600, "log_every": 100}, str(run))
    base = cfg.saes[0]
    cfg.saes = [type(base)(arch="jumprelu", d_sae=384, lr=3e-3, hyper={**base.hyper, **extra}, data=base.data, name=name)
                for name, extra in (("target8", {"target_l0": 8.0, "l0_coeff": 5.0}), ("penalty", {}))]
    run_training(cfg, progress=False)
    l0_target, fvu_target = _eval_checkpoint(run / "target8", cache, layer=0)
    l0_penalty, _ = _eval_checkpoint(run / "penalty", cache, layer=0)
    assert 6.0 <= l0_target <= 10.0, l0_target
    assert fvu_target < 0.5, fvu_target
    assert l0_penalty < 0.1 * 384, l0_penalty


def test_learning_rate_follows_warmup_then_linear_decay(tmp_path: Path) -> None:
    """The lr each step used (metrics.jsonl `lr`): linear warmup over lr_warmup_steps, constant,
    then linear decay to 0 over the last lr_decay_frac of the steps."""
    from sae_core.train import expand, run_training

    cache = gaussian_cache(tmp_path / "c")
    cfg = expand(str(cache), 16, {"batch_size": 100}, {"arch": "topk", "k": 2, "exp_factor": 2, "lr": 1e-2},
                 {"steps": 20, "log_every": 1, "lr_warmup_steps": 4, "lr_decay_frac": 0.25}, str(tmp_path / "run"))
    run_training(cfg, progress=False)
    log = [json.loads(x) for x in (tmp_path / "run" / "topk-k2" / "metrics.jsonl").read_text().splitlines()]
    expected = [1e-2 * min(1.0, (s + 1) / 4, (20 - s) / 5) for s in range(20)]  # step s (0-based), 5 decay steps
    assert [r["lr"] for r in log] == pytest.approx(expected)
