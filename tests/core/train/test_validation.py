"""The validation split: whole examples, deterministic, never read by training; validation
metrics in metrics.jsonl, cfg.json and sweep.json; the best checkpoint by validation FVU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_core.protocols import ActivationBatch, BatchPlan, CacheMetadata
from sae_core.stores import open_reader, open_writer
from sae_core.validation_split import ExampleSplit, Selection


def test_split_is_a_deterministic_fraction_of_whole_examples() -> None:
    ids = np.arange(20_000, dtype=np.int64) * 7 + 3
    split = ExampleSplit(0.1, seed=0)
    val = split.is_val(ids)
    assert abs(val.mean() - 0.1) < 0.01
    perm = np.random.default_rng(0).permutation(len(ids))
    assert (split.is_val(ids[perm]) == val[perm]).all()  # membership is per example, not per position
    assert (ExampleSplit(0.1, seed=0).is_val(ids) == val).all()
    assert (ExampleSplit(0.1, seed=1).is_val(ids) != val).any()
    assert not ExampleSplit(0.0).is_val(ids).any()
    assert (split.keep(ids, "train") == ~val).all() and split.keep(ids, "all").all()
    smaller = ExampleSplit(0.05, seed=0).is_val(ids)
    assert not (smaller & ~val).any()  # a smaller fraction is a subset: growing it only moves examples in


def id_cache(root: Path, n: int = 300, tokens: int = 3, poison_val: float | None = None) -> Path:
    """Every token's first coordinate is its dataset example id (rows: examples 0..n-1, some
    windows of one example share it); ``poison_val`` overwrites validation examples' activations."""
    meta = CacheMetadata(adapter="t", model="ids", layers=["x"], d_model=6, dtype="float32", tokens_per_example=tokens,
                         token_kinds=["token"] * tokens, dataset={"spec": "ids"})
    w = open_writer(root, meta, shard_examples=64)
    gen = torch.Generator().manual_seed(0)
    example = np.arange(n) // 2  # two rows (windows) per example
    acts = torch.randn(n, 1, tokens, 6, generator=gen)
    acts[..., 0] = torch.from_numpy(example).float()[:, None, None]
    if poison_val is not None:
        val = ExampleSplit(0.02).is_val(example)
        acts[torch.from_numpy(val)] = poison_val
    w.write(ActivationBatch(acts=acts, example_ids=example.astype(np.int64)))
    return w.close()


def test_reader_yields_each_side_of_the_split_once(tmp_path: Path) -> None:
    reader = open_reader(id_cache(tmp_path))
    split = ExampleSplit(0.1, seed=2)
    seen = {}
    for side in ("train", "val", "all"):
        sel = Selection(split, side)
        xs = torch.cat(list(reader.batches(BatchPlan(7, seed=1, select=sel, drop_last=False))))[:, 0, 0]
        assert len(xs) == reader.n_tokens(select=sel)
        seen[side] = xs.long().numpy()
    val_examples = set(seen["val"].tolist())
    assert val_examples and all(split.is_val(np.array([e]))[0] for e in val_examples)
    assert not val_examples & set(seen["train"].tolist())
    assert sorted(np.concatenate([seen["train"], seen["val"]]).tolist()) == sorted(seen["all"].tolist())
    assert len(reader.rows(Selection(split, "val"))) == 2 * len(val_examples)  # both windows of each example


def test_training_never_reads_validation_examples(run_cli, tmp_path: Path) -> None:
    """Validation examples hold NaN: training with the split finishes (the non-finite check would
    stop it at the first NaN it read) and validation reports NaN; without the split it stops."""
    cache = id_cache(tmp_path / "c", poison_val=float("nan"))
    args = ["train", "--data", str(cache), "--arch", "topk", "--k", "2", "--exp-factor", "2", "--batch-size", "60",
            "--steps", "12", "--log-every", "4", "-q"]
    code, _, err = run_cli(*args, "--out", str(tmp_path / "split"))
    assert code == 0, err
    log = [json.loads(x) for x in (tmp_path / "split" / "topk-k2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_fvu" in r] == [4, 8, 12] and math.isnan(log[-1]["val_fvu"])
    assert all(math.isfinite(r["fvu"]) for r in log)
    code, _, err = run_cli(*args, "--val-fraction", "0", "--out", str(tmp_path / "nosplit"))
    assert code == 1 and "non-finite" in err


def test_cli_records_validation_metrics_and_keeps_the_best(run_cli, tmp_path: Path) -> None:
    cache = id_cache(tmp_path / "c", n=600)
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", str(cache), "--out", str(out), "--arch", "topk", "--k", "2",
                           "--exp-factor", "2", "--batch-size", "60", "--steps", "20", "--log-every", "2",
                           "--eval-every", "5", "--val-fraction", "0.1", "--keep-best", "-q")
    assert code == 0, err
    ckpt = out / "topk-k2"
    cfg = json.loads((ckpt / "cfg.json").read_text())
    split = ExampleSplit(0.1)
    n_val = open_reader(cache).n_tokens(select=Selection(split, "val"))
    assert cfg["val"] == {"fraction": 0.1, "seed": 0, "tokens": n_val}
    assert {"val_fvu", "val_l0", "val_dead_frac"} <= set(cfg["metrics"])
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["saes"][0]["final"]["val_fvu"] == cfg["metrics"]["val_fvu"]
    log = [json.loads(x) for x in (ckpt / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in log if "val_fvu" in r]
    assert [r["step"] for r in evals] == [5, 10, 15, 20]
    best = min(evals, key=lambda r: r["val_fvu"])
    best_cfg = json.loads((ckpt / "best" / "cfg.json").read_text())
    assert best_cfg["best"] == {"step": best["step"], "val_fvu": pytest.approx(best["val_fvu"])}
    from sae_core.checkpoint import load_sae

    sae = load_sae(ckpt / "best")  # the best checkpoint is a complete SAE
    val_plan = BatchPlan(50, select=Selection(split, "val"), drop_last=False)
    x = torch.cat(list(open_reader(cache).batches(val_plan)))[:, 0]
    with torch.no_grad():
        fvu = float(((sae(x) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
        codes = sae.encode(x)  # (tokens, d_sae)
    assert fvu == pytest.approx(best["val_fvu"], rel=1e-3)
    assert float((codes != 0).sum(-1).float().mean()) == pytest.approx(best["val_l0"], rel=1e-5)
    assert float((~(codes != 0).any(0)).float().mean()) == pytest.approx(best["val_dead_frac"])


def test_bad_val_fraction_is_a_one_line_error(run_cli, tmp_path: Path) -> None:
    cache = id_cache(tmp_path / "c", n=40)
    code, _, err = run_cli("train", "--data", str(cache), "--out", str(tmp_path / "r"), "--val-fraction", "1.5", "-q")
    assert code == 1 and "val_fraction must be in [0, 1)" in err and "Traceback" not in err


def test_inference_metrics_in_chunks_equal_the_whole_batch(run_cli, tmp_path: Path, monkeypatch) -> None:
    """Inference-mode metrics (validation, and the log steps and final metrics of BatchTopK, whose
    training differs from inference) encode a bank in chunks of tokens bounded by MAX_CODES: the
    same numbers as encoding a batch at once, for a bank with several SAEs."""
    import sae_core.train.validation as validation

    cache = id_cache(tmp_path / "c", n=600)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[sae]\narch = "batchtopk"\nk = [2, 3]\nexp_factor = 2\n')
    args = ["train", "--data", str(cache), "--sweep", str(sweep), "--batch-size", "60",
            "--steps", "6", "--log-every", "3", "--val-fraction", "0.1", "-q"]
    logs = {}
    for name, max_codes in (("whole", 2**25), ("chunks", 7 * 2 * 12)):  # 7 tokens of 2 SAEs of width 12
        monkeypatch.setattr(validation, "MAX_CODES", max_codes)
        code, _, err = run_cli(*args, "--out", str(tmp_path / name))
        assert code == 0, err
        logs[name] = {k: [json.loads(x) for x in (tmp_path / name / f"batchtopk-k{k}" / "metrics.jsonl").read_text().splitlines()]
                      for k in (2, 3)}
        logs[name]["cfg"] = json.loads((tmp_path / name / "batchtopk-k2" / "cfg.json").read_text())["metrics"]
    assert validation.chunk_rows(type("B", (), {"n": 2, "d_sae": 12})(), 60) == 7
    for k in (2, 3):
        for a, b in zip(logs["whole"][k], logs["chunks"][k], strict=True):
            for key in ("fvu", "l0", "train_fvu", "val_fvu", "val_l0", "val_dead_frac"):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (k, key, a["step"])
    for key in ("fvu", "l0", "val_fvu"):
        assert logs["chunks"]["cfg"][key] == pytest.approx(logs["whole"]["cfg"][key], rel=1e-5)
