"""torchrun on CPU (gloo, 2 processes): caching split over ranks, data- and SAE-parallel training.

Every test compares a 2-rank run with a 1-rank run of the same command: the multi-process paths
must produce the same cache rows and (up to float summation order) the same SAEs, and either can
resume the other's interrupted work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.stores import gaussian_cache
from sae_core.stores import open_reader
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def sae_cmd(*args: str, nproc: int | None = 2, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node N -m sae_core ARGS`` (or plain ``python -m sae_core`` for None)."""
    launcher = [] if nproc is None else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [sys.executable, *launcher, "-m", "sae_core", *args] if launcher else [sys.executable, "-m", "sae_core", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def assert_same_cache(a: Path, b: Path) -> None:
    ra, rb = open_reader(a), open_reader(b)
    assert ra.meta.complete and rb.meta.complete
    assert ra.n_examples == rb.n_examples == ra.meta.n_examples == rb.meta.n_examples
    xa, ia = ra.read_examples(0, ra.n_examples)
    xb, ib = rb.read_examples(0, rb.n_examples)
    # the same rows; values equal up to float rounding (a batched forward's GEMM blocking depends
    # on which examples share the batch, and ranks start their blocks at other batch boundaries)
    torch.testing.assert_close(xb, xa, rtol=1e-5, atol=1e-6)
    assert np.array_equal(ia, ib)
    assert not (b / "blocks").exists() and not list(b.glob("*.tmp"))


# -- caching -------------------------------------------------------------------------------------
MLP_CACHE = ("cache", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0,-1", "--data", "gaussian:90",
             "--shard-examples", "8", "--batch-size", "8", "-q")


def test_two_rank_cache_equals_one_rank(run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli(*MLP_CACHE, "--out", str(tmp_path / "one"))
    assert code == 0, err
    one = Path(out.strip())
    proc = sae_cmd(*MLP_CACHE, "--out", str(tmp_path / "two"))
    two = Path(proc.stdout.strip())  # only rank 0 prints
    assert two.name == one.name  # same content address
    assert_same_cache(one, two)
    shards = json.loads((two / "shards.json").read_text())["shards"]
    assert {s["file"].split("-")[1] for s in shards} == {"b00000", "b00001"}  # both ranks wrote shards
    runs = [json.loads(line) for line in (two / "cache_runs.jsonl").read_text().splitlines()]
    assert runs[-1]["world_size"] == 2 and runs[-1]["examples"] == 90


def test_text_cache_in_blocks_equals_one_pass(run_cli, tmp_path: Path) -> None:
    """Text documents span several windows; a block ends at a document boundary, never inside."""
    from helpers.text import TEXT_DOCS, TINY_TLENS_CFG
    from sae_core.datasets import open_dataset
    from sae_core.stores.local.parallel import plan_blocks
    from sae_text.minilm import minilm_dir

    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(TEXT_DOCS * 2))
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY_TLENS_CFG))
    args = ("cache", "--adapter", "tlens", "--model", f"config:{cfg}", "--data", f"text:{corpus}", "--layers", "0",
            "--context-size", "16", "--batch-size", "3", "--shard-examples", "4", "--opt", f"tokenizer={minilm_dir()}", "-q")
    code, out, err = run_cli(*args, "--out", str(tmp_path / "one"))
    assert code == 0, err
    one = Path(out.strip())
    # a plan of 3 blocks, as 3 ranks would leave it; one process then writes the blocks in turn
    meta = open_reader(one).meta
    n_docs = len(open_dataset(f"text:{corpus}", "text"))
    meta.complete, meta.n_examples = False, None
    assert plan_blocks(tmp_path / "blocks", meta, n_docs, 3) == [(0, 2), (2, 5), (5, 8)]
    code, out, err = run_cli(*args, "--out", str(tmp_path / "blocks"))
    assert code == 0, err
    assert_same_cache(one, Path(out.strip()))
    shards = json.loads((Path(out.strip()) / "shards.json").read_text())["shards"]
    assert {s["file"].split("-")[1] for s in shards} == {"b00000", "b00001", "b00002"}


def test_interrupted_parallel_cache_resumes_with_other_world_sizes(run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli(*MLP_CACHE, "--out", str(tmp_path / "clean"))
    assert code == 0, err
    clean = Path(out.strip())
    # 1. two ranks; rank 1 (examples 45..89) crashes at example 85, rank 0 finished its block
    #    (the writer queue holds at most 2 shards, so several of rank 1's shards are on disk)
    root = tmp_path / "crashed"
    proc = sae_cmd(*MLP_CACHE, "--out", str(root), env={"SAE_EXAMPLE_CRASH_AT": "85"}, check=False)
    assert proc.returncode != 0
    path = root / clean.name
    assert not json.loads((path / "metadata.json").read_text())["complete"]
    block0 = json.loads((path / "blocks" / "block-00000.json").read_text())
    block1 = json.loads((path / "blocks" / "block-00001.json").read_text())
    assert block0["complete"] and not block1["complete"]
    assert block1["shards"] and block1["shards"][-1]["last_example"] < 85  # finished shards are kept
    kept = {s["file"]: (path / s["file"]).stat().st_mtime_ns for s in block0["shards"] + block1["shards"]}
    # 2. a plain single process must finish it the block way, not start over
    proc = sae_cmd(*MLP_CACHE, "--out", str(root), nproc=None)
    assert Path(proc.stdout.strip()) == path
    assert_same_cache(clean, path)
    assert all((path / f).stat().st_mtime_ns == t for f, t in kept.items())  # nothing rewritten

    # 3. the other way round: a single process crashes, two ranks finish the rest
    root2 = tmp_path / "single-crashed"
    proc = sae_cmd(*MLP_CACHE, "--out", str(root2), nproc=None, env={"SAE_EXAMPLE_CRASH_AT": "70"}, check=False)
    assert proc.returncode != 0
    done = json.loads((root2 / clean.name / "shards.json").read_text())["shards"]
    assert done and done[-1]["last_example"] < 70
    sae_cmd(*MLP_CACHE, "--out", str(root2))
    plan_start = done[-1]["last_example"] + 1
    assert_same_cache(clean, root2 / clean.name)
    files = [s["file"] for s in json.loads((root2 / clean.name / "shards.json").read_text())["shards"]]
    assert files[: len(done)] == [s["file"] for s in done] and plan_start > 0


# -- training ------------------------------------------------------------------------------------
SWEEP = """
[data]
layer = 1
batch_size = 64
[train]
steps = {steps}
log_every = 6
checkpoint_every = 8
lr_warmup_steps = 3
sparsity_warmup_steps = 3
lr_decay_frac = 0.0
dead_tokens = 200
[sae]
arch = ["topk", "batchtopk", "jumprelu", "matryoshka"]
k = 3
target_l0 = 3.0
exp_factor = 2
"""


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory) -> dict[str, Path]:
    """A cache, the sweep file, and the 1-process reference run of 24 steps."""
    from conftest import cli_runner

    tmp = tmp_path_factory.mktemp("dist-train")
    cache = gaussian_cache(tmp / "cache", n=2000)
    for steps in (12, 24):
        (tmp / f"sweep{steps}.toml").write_text(SWEEP.format(steps=steps))
    code, _, err = cli_runner()("train", "--data", str(cache), "--sweep", str(tmp / "sweep24.toml"),
                                "--out", str(tmp / "ref"), "-q")
    assert code == 0, err
    return {"cache": cache, "tmp": tmp, "ref": tmp / "ref"}


def assert_same_run(ref: Path, other: Path) -> None:
    names = sorted(p.name for p in ref.iterdir() if (p / "sae.safetensors").exists())
    assert len(names) == 4 and names == sorted(p.name for p in other.iterdir() if (p / "sae.safetensors").exists())
    for name in names:
        a, b = load_file(ref / name / "sae.safetensors"), load_file(other / name / "sae.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=f"{name}/{k}")
        ma = [json.loads(x) for x in (ref / name / "metrics.jsonl").read_text().splitlines()]
        mb = [json.loads(x) for x in (other / name / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in ma] == [m["step"] for m in mb] == [6, 12, 18, 24]
        for x, y in zip(ma, mb, strict=True):  # metrics are of the whole batch, not one rank's slice
            for key in ("fvu", "l0", "dead_frac", "dense_frac", "loss"):
                assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-6), (name, key, x["step"])
    sweep_ref = json.loads((ref / "sweep.json").read_text())
    sweep = json.loads((other / "sweep.json").read_text())
    assert [s["name"] for s in sweep["saes"]] == [s["name"] for s in sweep_ref["saes"]]


@pytest.mark.parametrize("mode", ["data", "sae"])
def test_two_rank_training_equals_one_rank(train_setup, mode: str) -> None:
    out = train_setup["tmp"] / f"two-{mode}"
    proc = sae_cmd("train", "--data", str(train_setup["cache"]), "--sweep", str(train_setup["tmp"] / "sweep24.toml"),
                   "--out", str(out), "--parallel", mode, "-q")
    assert proc.stdout.strip() == str(out)
    assert_same_run(train_setup["ref"], out)
    cfg = json.loads((out / "topk-k3" / "cfg.json").read_text())
    assert cfg["train"]["world_size"] == 2 and cfg["train"]["parallel"] == mode


def test_resume_with_another_world_size(train_setup, run_cli) -> None:
    tmp, cache = train_setup["tmp"], str(train_setup["cache"])
    # 2 ranks (SAEs split over them) for 12 steps, then 1 process on to 24
    out = tmp / "two-then-one"
    sae_cmd("train", "--data", cache, "--sweep", str(tmp / "sweep12.toml"), "--out", str(out), "--parallel", "sae", "-q")
    code, _, err = run_cli("train", "--resume", "--out", str(out), "--steps", "24", "-q")
    assert code == 0, err
    assert_same_run(train_setup["ref"], out)
    # 1 process for 12 steps, then 2 data-parallel ranks on to 24
    out = tmp / "one-then-two"
    code, _, err = run_cli("train", "--data", cache, "--sweep", str(tmp / "sweep12.toml"), "--out", str(out), "-q")
    assert code == 0, err
    sae_cmd("train", "--resume", "--out", str(out), "--steps", "24", "--parallel", "data", "-q")
    assert_same_run(train_setup["ref"], out)


def test_batch_not_divisible_by_world_is_a_clear_error(train_setup) -> None:
    from sae_core.dist import Dist
    from sae_core.errors import ConfigError
    from sae_core.train import expand, run_training

    config = expand(str(train_setup["cache"]), 16, {"batch_size": 63}, {"k": 2}, {"steps": 2},
                    str(train_setup["tmp"] / "odd"))
    with pytest.raises(ConfigError, match="batch size 63 does not split evenly over 2 ranks; use a multiple of 2"):
        run_training(config, progress=False, dist=Dist(rank=0, world=2))  # checked before any collective


def test_two_rank_transcoders_equal_one_rank(train_setup) -> None:
    """Transcoders (layer 0 -> layer 1) under torchrun, data- and SAE-parallel: both layers of each
    rank's slice, the target's scale and median broadcast, metrics of the target."""
    from conftest import cli_runner

    tmp, cache = train_setup["tmp"], str(train_setup["cache"])
    (tmp / "tc.toml").write_text(SWEEP.format(steps=24).replace("layer = 1", "layer = 0\nlayer_out = 1"))
    code, _, err = cli_runner()("train", "--data", cache, "--sweep", str(tmp / "tc.toml"), "--out", str(tmp / "tc-ref"), "-q")
    assert code == 0, err
    assert json.loads((tmp / "tc-ref" / "topk-k3" / "cfg.json").read_text())["source"]["layer_out"] == "l1"
    for mode in ("data", "sae"):
        out = tmp / f"tc-two-{mode}"
        sae_cmd("train", "--data", cache, "--sweep", str(tmp / "tc.toml"), "--out", str(out), "--parallel", mode, "-q")
        assert_same_run(tmp / "tc-ref", out)
# -- live training -------------------------------------------------------------------------------
LIVE = ("train", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0,-1", "--data", "gaussian:400",
        "--model-batch-size", "16", "--buffer-tokens", "60", "-q")


@pytest.fixture(scope="module")
def live_ref(train_setup) -> Path:
    """The 1-process live run of 24 steps (the sweep of the cached tests, on the mlp model)."""
    from conftest import cli_runner

    out = train_setup["tmp"] / "live-ref"
    code, _, err = cli_runner()(*LIVE, "--sweep", str(train_setup["tmp"] / "sweep24.toml"), "--out", str(out))
    assert code == 0, err
    return out


@pytest.mark.parametrize("mode", ["data", "sae"])
def test_two_rank_live_training_equals_one_rank(train_setup, live_ref: Path, mode: str) -> None:
    """Each rank runs the model on its half of every window; the window is all-gathered and both
    ranks follow the one-process plan: the same SAEs up to float rounding (the ranks' forward
    batches hold other examples than one process's)."""
    out = train_setup["tmp"] / f"live-two-{mode}"
    proc = sae_cmd(*LIVE, "--sweep", str(train_setup["tmp"] / "sweep24.toml"), "--out", str(out), "--parallel", mode)
    assert proc.stdout.strip() == str(out)
    assert_same_run(live_ref, out)


def test_live_resume_with_another_world_size(train_setup, live_ref: Path, run_cli) -> None:
    """2 ranks for 12 steps, then 1 process on to 24: the window is recomputed by one process and
    the carried samples come from the state rank 0 saved."""
    out = train_setup["tmp"] / "live-two-then-one"
    sae_cmd(*LIVE, "--sweep", str(train_setup["tmp"] / "sweep12.toml"), "--out", str(out))
    code, _, err = run_cli("train", "--resume", "--out", str(out), "--steps", "24", "-q")
    assert code == 0, err
    assert_same_run(live_ref, out)


def test_live_also_cache_under_torchrun_is_refused(train_setup) -> None:
    proc = sae_cmd(*LIVE, "--out", str(train_setup["tmp"] / "live-ac"), "--also-cache", str(train_setup["tmp"] / "ac"),
                   "--steps", "2", check=False)
    assert proc.returncode != 0 and "--also-cache writes the cache from one process" in proc.stderr
