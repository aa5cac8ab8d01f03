"""Nothing lost, nothing silently wrong (issue 17): run identity, refusal to clobber, locks, data
checks, clean stops on signals, damaged state, durable writes, and the security items.

Each test names the promise of docs/reliability.md it proves.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.reliability import (
    assert_one_line_error,
    checkpoints_equal,
    small_cache,
    snapshot,
    start_slow_train,
    train_args,
    wait_for_metrics,
)
from sae_core.errors import SAEError
from sae_core.protocols import BatchPlan


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(cache, run): the tiny sweep trained 40 steps without interruption."""
    from conftest import cli_runner

    root = tmp_path_factory.mktemp("reference")
    cache = small_cache(root / "cache")
    code, _, err = cli_runner()(*train_args(cache, root / "run"))
    assert code == 0, err
    return cache, root / "run"


def _interrupted(cache: Path, out: Path, steps: int = 17) -> None:
    """The tiny sweep (as `train_args` configures it) stopped after ``steps`` of 40 steps, state saved."""
    from sae_core.train import expand, load_sweep, run_training

    train_args(cache, out)  # writes the sweep file
    tables = load_sweep(cache.parent / "sweep.toml")
    config = expand(str(cache), 16, {"layer": "1", "batch_size": 128}, tables["sae"],
                    {"steps": 40, "log_every": 5, "checkpoint_every": 7}, str(out))
    run_training(config, progress=False, stop_after=steps)
    assert not (out / "sweep.json").exists()


# -- 1. --out is the run's identity --------------------------------------------------------------
def test_copied_run_resumes_in_place_and_leaves_original_untouched(run_cli, reference, tmp_path: Path) -> None:
    cache, straight = reference
    original = tmp_path / "original"
    _interrupted(cache, original)
    before = snapshot(original)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    code, out, err = run_cli("train", "--resume", "--out", str(copy), "-q")
    assert code == 0, err
    assert out.strip() == str(copy)
    assert snapshot(original) == before  # the original was not touched
    checkpoints_equal(straight, copy)  # and the copy finished exactly like an uninterrupted run


def test_moved_run_and_cache_resume_from_another_working_directory(run_cli, reference, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _, straight = reference
    first = tmp_path / "first"
    first.mkdir()
    monkeypatch.chdir(first)  # relative paths, as the quickstart records them
    cache = small_cache(Path("caches"))
    _interrupted(cache, Path("runs/a"))
    moved = tmp_path / "moved"
    shutil.move(str(first), str(moved))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli("train", "--resume", "--out", str(moved / "runs" / "a"), "-q")
    assert code == 0, err
    assert not first.exists()  # nothing re-created at the old path
    checkpoints_equal(straight, moved / "runs" / "a")
    code, _, err = run_cli("analyze", str(moved / "runs" / "a"), "--only", "feature-stats", "-q")
    assert code == 0, err  # the analyses find the moved cache too
    assert (moved / "runs" / "a" / "topk-k4" / "feature_stats.json").is_file()


def test_run_whose_cache_is_gone_names_it_and_data_flag(run_cli, reference, tmp_path: Path) -> None:
    cache, straight = reference
    run = tmp_path / "run"
    _interrupted(cache, run)
    hidden = tmp_path / "hidden"
    shutil.copytree(cache.parent, hidden)
    doc = json.loads((run / "config.json").read_text())
    doc["cache"], doc["cache_relative"] = str(tmp_path / "gone" / cache.name), "../gone/" + cache.name
    (run / "config.json").write_text(json.dumps(doc))
    code, _, err = run_cli("train", "--resume", "--out", str(run), "-q")
    assert_one_line_error(code, err, str(tmp_path / "gone" / cache.name), "--data", doc["cache_fingerprint"])
    code, _, err = run_cli("train", "--resume", "--out", str(run), "--data", str(hidden / cache.name), "-q")
    assert code == 0, err
    checkpoints_equal(straight, run)


def test_resume_on_another_cache_is_refused(run_cli, reference, tmp_path: Path) -> None:
    cache, _ = reference
    run = tmp_path / "run"
    _interrupted(cache, run)
    other = small_cache(tmp_path / "other", seed=5)  # same shape, other data
    code, _, err = run_cli("train", "--resume", "--out", str(run), "--data", str(other), "-q")
    assert_one_line_error(code, err, "another cache", "omit --data")


# -- 2. no new run over an old one -----------------------------------------------------------------
def test_new_run_into_existing_run_is_refused_naming_resume_and_overwrite(run_cli, reference, tmp_path: Path) -> None:
    cache, _ = reference
    run = tmp_path / "run"
    _interrupted(cache, run)
    before = snapshot(run)
    code, _, err = run_cli(*train_args(cache, run))
    assert_one_line_error(code, err, "already holds a training run", "--resume", "--overwrite")
    assert snapshot(run) == before


def test_overwrite_clears_old_state_before_training(run_cli, reference, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's scenario: a new run with another d_sae killed before its first checkpoint must not
    leave the old state for `--resume` to pick up."""
    from sae_core.train import group

    cache, _ = reference
    run = tmp_path / "run"
    _interrupted(cache, run)
    (run / "notes.txt").write_text("mine")  # not ours: kept

    def killed(self, **kwargs):  # dies before its first checkpoint
        raise SAEError("killed")

    with monkeypatch.context() as m:
        m.setattr(group.GroupTrainer, "run", killed)
        code, _, err = run_cli(*train_args(cache, run, "--exp-factor", "3", "--overwrite"))
    assert code == 1 and "killed" in err
    assert not (run / "state").exists() and not (run / "topk-k4").exists()
    assert (run / "notes.txt").read_text() == "mine"
    code, _, err = run_cli("train", "--resume", "--out", str(run), "-q")
    assert code == 0, err  # from scratch, with the new config: no size mismatch, no old weights
    cfg = json.loads((run / "topk-k4" / "cfg.json").read_text())
    assert cfg["d_sae"] == 48


# -- 3. one writer per run and per cache ----------------------------------------------------------
def test_second_concurrent_train_into_same_out_is_refused(run_cli, reference, tmp_path: Path) -> None:
    cache, _ = reference
    run = tmp_path / "run"
    proc = start_slow_train(train_args(cache, run, steps=400), delay=0.02)
    try:
        wait_for_metrics(proc, run / "topk-k4" / "metrics.jsonl", 1)
        code, _, err = run_cli(*train_args(cache, run, "--overwrite"))
        assert_one_line_error(code, err, "in use by another sae process", f"pid {proc.pid}")
        code, _, err = run_cli("train", "--resume", "--out", str(run), "-q")
        assert_one_line_error(code, err, f"pid {proc.pid}")
    finally:
        proc.kill()
        proc.communicate()
    code, _, err = run_cli("train", "--resume", "--out", str(run), "--steps", "30", "-q")
    assert code == 0, err  # kill -9 released the lock: no stale lock file blocks the resume


def test_second_cache_writer_is_refused(run_cli, tmp_path: Path) -> None:
    from sae_core.lock import DirLock

    args = ("cache", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0", "--data", "gaussian:20",
            "--out", str(tmp_path), "-q")
    code, out, err = run_cli(*args)
    assert code == 0, err
    path = Path(out.strip())
    with DirLock(path, "cache"):  # another writer holds it (flock: per open file, so in-process works)
        code, _, err = run_cli(*args)
    assert_one_line_error(code, err, f"cache {path} is in use", f"pid {os.getpid()}")
    code, _, err = run_cli(*args)
    assert code == 0, err


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    from sae_core.lock import DirLock, LockedError

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from sae_core.lock import DirLock; "
                               f"DirLock({str(tmp_path)!r}, 'x').acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match=f"pid {holder.pid}"):
        DirLock(tmp_path, "run directory").acquire()
    holder.kill()
    holder.wait()
    with DirLock(tmp_path, "run directory") as lock:
        assert lock.held


# -- 4. data is checked ------------------------------------------------------------------------------
def _batch_of(cache: Path, row: int, *, seed: int, batches: int) -> int | None:
    """Which batch of epoch 0 of the tiny sweep's stream holds ``row`` (None: none of the first ``batches``)."""
    from sae_core.stores import open_reader
    from sae_core.validation_split import ExampleSplit, Selection

    reader = open_reader(cache)
    train = Selection(ExampleSplit(0.02), "train")  # training reads the train side of the default split
    for b in range(batches):
        if row in reader.batch_sample_ids(BatchPlan(128, layers=[1], seed=seed, epoch=0, select=train), b):
            return b
    return None


def test_nan_in_cache_stops_training_naming_step_and_shard(run_cli, tmp_path: Path) -> None:
    # a row the initialisation sample (side stream, seed 7919, 8 batches) does not read
    probe = small_cache(tmp_path / "probe")
    row = next(r for r in range(1000, 1500) if _batch_of(probe, r, seed=7919, batches=8) is None
               and _batch_of(probe, r, seed=0, batches=15) is not None)
    cache = small_cache(tmp_path / "c", poison={row: math.nan})
    step = _batch_of(cache, row, seed=0, batches=15) + 1  # epoch 0: batch b is step b + 1
    code, _, err = run_cli(*train_args(cache, tmp_path / "run"))
    assert_one_line_error(code, err, "non-finite", f"training step {step}:", "acts-000002.bin",
                          f"dataset example {row}", "sae info --verify")
    assert not (tmp_path / "run" / "topk-k4" / "cfg.json").exists()
    state = tmp_path / "run" / "state" / "group-0" / "state.json"
    assert not state.exists() or json.loads(state.read_text())["step"] < step  # no NaN state saved


def test_nan_and_inf_met_while_initialising_are_reported(run_cli, tmp_path: Path) -> None:
    cache = small_cache(tmp_path / "c", poison={**{r: math.nan for r in range(600, 700)}, 900: math.inf})
    code, _, err = run_cli(*train_args(cache, tmp_path / "run"))
    assert_one_line_error(code, err, "non-finite", "initialising", "acts-000001.bin")


def test_diverging_loss_is_reported_as_divergence(run_cli, reference, tmp_path: Path) -> None:
    cache, _ = reference
    code, _, err = run_cli(*train_args(cache, tmp_path / "run", "--lr", "1e9"))
    assert_one_line_error(code, err, "became non-finite at training step", "inputs are finite", "lr 1e+09")


def test_incomplete_cache_is_refused_unless_allowed(run_cli, tmp_path: Path) -> None:
    cache = small_cache(tmp_path / "c", n=2000, close=False)  # killed mid-write: 3 of 4 shards
    assert not json.loads((cache / "metadata.json").read_text())["complete"]
    code, _, err = run_cli(*train_args(cache, tmp_path / "run", steps=5))
    assert_one_line_error(code, err, "incomplete", "--allow-incomplete", "same `sae cache` command")
    code, _, err = run_cli(*train_args(cache, tmp_path / "run", "--allow-incomplete", steps=5))
    assert code == 0, err
    code, _, err = run_cli("analyze", str(tmp_path / "run"), "--only", "feature-stats", "-q")
    assert_one_line_error(code, err, "incomplete", "--allow-incomplete")
    code, _, err = run_cli("analyze", str(tmp_path / "run"), "--only", "feature-stats", "-q", "--allow-incomplete")
    assert code == 0, err


def test_shard_checksums_are_written_and_verified(run_cli, tmp_path: Path) -> None:
    from sae_core.errors import StoreError
    from sae_core.stores import open_reader

    cache = small_cache(tmp_path / "c")
    shards = json.loads((cache / "shards.json").read_text())["shards"]
    assert all(len(s["sha256"]) == 64 and len(s["index_sha256"]) == 64 for s in shards)
    code, out, err = run_cli("info", "--verify", str(cache))
    assert code == 0, err
    assert json.loads(out)["verified"] == {"shards": 4, "damaged": [], "unchecked": [], "nonfinite": {}}
    raw = bytearray((cache / "acts-000002.bin").read_bytes())
    raw[100] ^= 0x01  # one flipped bit: same size, still finite
    (cache / "acts-000002.bin").write_bytes(bytes(raw))
    code, _, err = run_cli("info", "--verify", str(cache))
    assert_one_line_error(code, err, "acts-000002.bin")
    with pytest.raises(StoreError, match=r"acts-000002\.bin does not match its checksum"):
        open_reader(cache)  # a small cache is checked on every open


def test_verify_counts_nonfinite_values(run_cli, tmp_path: Path) -> None:
    cache = small_cache(tmp_path / "c", poison={1600: math.inf, 1601: math.nan})
    code, _, err = run_cli("info", "--verify", str(cache))
    assert_one_line_error(code, err, "32 non-finite value(s) in shard(s) acts-000003.bin")


def test_undecodable_text_is_skipped_counted_and_reported(run_cli, tmp_path: Path) -> None:
    from sae_core.datasets import open_dataset
    from sae_text.minilm import minilm_dir

    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "a.txt").write_text("Plain UTF-8 text about sparse autoencoders and their features.")
    (folder / "b.txt").write_bytes("caf\xe9 cr\xe8me, written in Latin-1".encode("latin-1"))
    (folder / "c.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (folder / "d.txt").write_text("Another readable document, with ünïcödé.")
    ds = open_dataset(f"text:{folder}", "text")
    assert len(ds) == 2 and ds.skipped == 2
    assert [ds[i].source for i in range(2)] == ["a.txt", "d.txt"]
    single = tmp_path / "one.txt"
    single.write_bytes(b"good block\n\n\xff\xfe bad block\n\nanother good block")
    ds = open_dataset(f"text:{single}", "text")
    assert [ds[i].data for i in range(len(ds))] == ["good block", "another good block"] and ds.skipped == 1
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"n_layers": 1, "d_model": 16, "n_ctx": 32, "d_head": 8, "n_heads": 2, "d_mlp": 32,
                               "d_vocab": 30522, "act_fn": "gelu", "normalization_type": "LN"}))
    code, out, err = run_cli("cache", "--adapter", "tlens", "--model", f"config:{cfg}", "--opt",
                             f"tokenizer={minilm_dir()}", "--layers", "0", "--data", f"text:{folder}",
                             "--out", str(tmp_path / "c"), "--context-size", "8", "-q")
    assert code == 0, err
    assert "warning: 2 example(s)" in err and "skipped" in err
    runs = [json.loads(x) for x in (Path(out.strip()) / "cache_runs.jsonl").read_text().splitlines()]
    assert runs[-1]["skipped_unreadable"] == 2


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--context-size", "0", "--context-size must be >= 1"),
    ("--batch-size", "0", "--batch-size must be >= 1"),
    ("--max-examples", "0", "--max-examples must be >= 1"),
    ("--shard-examples", "0", "--shard-examples must be >= 1"),
    ("--num-workers", "-1", "--num-workers must be >= 0"),
    ("--dtype", "fp8", "unknown dtype 'fp8'"),
    ("--device", "gpu0", "--device 'gpu0' is not a device"),
    ("--checkpoint", "/nonexistent/weights.pt", "--checkpoint /nonexistent/weights.pt does not exist"),
    ("--store", "nope", "unknown store 'nope'"),
    ("--data", "nope:x", "unknown text dataset 'nope'"),
])
def test_cache_options_are_validated_before_the_model_loads(run_cli, tmp_path: Path, monkeypatch, flag: str,
                                                            value: str, message: str) -> None:
    from sae_text.adapters import tlens

    def no_model(request):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(tlens, "load_model", no_model)
    args = {"--adapter": "tlens", "--model": "gpt2", "--layers": "0", "--data": "pydocs", "--out": str(tmp_path)}
    extra = [flag, value]
    if flag in args:
        args[flag], extra = value, []
    flat = [x for k, v in args.items() for x in (k, v)]
    code, _, err = run_cli("cache", *flat, *extra, "-q")
    assert_one_line_error(code, err, message)


# -- 5. clean stops, exact resume, damaged state ----------------------------------------------------
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_then_resume_equals_uninterrupted_run_bit_for_bit(run_cli, reference, tmp_path: Path, sig: int,
                                                                  status: int) -> None:
    cache, straight = reference
    run = tmp_path / "run"
    proc = start_slow_train(train_args(cache, run), delay=0.03)
    wait_for_metrics(proc, run / "topk-k4" / "metrics.jsonl", 2)  # stepping, past a checkpoint
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert_one_line_error(1, err, f"stopped by {signal.Signals(sig).name}", "state is saved",
                          f"sae train --resume --out {run}")
    stopped = json.loads((run / "state" / "group-0" / "state.json").read_text())["step"]
    assert 10 <= stopped < 40
    code, _, err = run_cli("train", "--resume", "--out", str(run), "-q")
    assert code == 0, err
    checkpoints_equal(straight, run)


def _damage_state(run: Path, how: str) -> None:
    state = run / "state" / "group-0"
    doc = json.loads((state / "state.json").read_text())
    tensors = state / doc["files"][0]
    if how == "empty state.json":
        (state / "state.json").write_text("")
    elif how == "truncated tensors":
        tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    elif how == "missing tensors":
        tensors.unlink()
    elif how == "state.json without its step":
        del doc["step"]
        (state / "state.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("how", ["empty state.json", "truncated tensors", "missing tensors",
                                 "state.json without its step"])
def test_damaged_state_is_a_one_line_error_naming_the_last_good_state(run_cli, reference, tmp_path: Path,
                                                                      how: str) -> None:
    cache, straight = reference
    run = tmp_path / "run"
    _interrupted(cache, run, steps=17)  # checkpoints at 7 and 14, stopped (and saved) at 17
    _damage_state(run, how)
    code, _, err = run_cli("train", "--resume", "--out", str(run), "-q")
    state = run / "state" / "group-0"
    assert_one_line_error(code, err, f"{state / 'state.json'} is damaged", "last good state is step 14",
                          f"delete {state / 'state.json'}")
    (state / "state.json").unlink()  # the fix the message names
    code, _, err = run_cli("train", "--resume", "--out", str(run), "-q")
    assert code == 0, err
    checkpoints_equal(straight, run)  # resumed from step 14: still exact


def test_partial_last_metrics_line_is_dropped_on_resume(run_cli, reference, tmp_path: Path) -> None:
    cache, straight = reference
    run = tmp_path / "run"
    _interrupted(cache, run)
    with open(run / "topk-k4" / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "fvu": 0.3')  # killed mid-append
    code, _, err = run_cli("train", "--resume", "--out", str(run), "-q")
    assert code == 0, err
    checkpoints_equal(straight, run)


def test_damaged_metrics_line_in_the_middle_is_an_error(run_cli, reference, tmp_path: Path) -> None:
    cache, _ = reference
    run = tmp_path / "run"
    _interrupted(cache, run)
    path = run / "topk-k4" / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    code, _, err = run_cli("train", "--resume", "--out", str(run), "-q")
    assert_one_line_error(code, err, f"{path} line 2 is damaged")


def test_state_keeps_the_previous_commit(reference, tmp_path: Path, run_cli) -> None:
    cache, _ = reference
    run = tmp_path / "run"
    _interrupted(cache, run, steps=17)
    state = run / "state" / "group-0"
    cur, prev = (json.loads((state / n).read_text()) for n in ("state.json", "state.prev.json"))
    assert (cur["step"], prev["step"]) == (17, 14)
    assert sorted(p.name for p in state.glob("tensors-*")) == sorted(cur["files"] + prev["files"])
    assert not list(state.glob("*.tmp"))


def test_durable_write_keeps_the_old_file_when_the_write_fails(tmp_path: Path, monkeypatch) -> None:
    from sae_core import io

    target = tmp_path / "doc.json"
    io.atomic_write_json(target, {"v": 1})
    calls = []

    def full(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        io.atomic_write_json(target, {"v": 2})
    assert calls, "the write was not fsynced"
    assert json.loads(target.read_text()) == {"v": 1}
    assert not list(tmp_path.glob("*.tmp"))


def test_durable_write_syncs_file_then_directory(tmp_path: Path, monkeypatch) -> None:
    from sae_core import io

    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    io.atomic_write_text(tmp_path / "a.txt", "hello")
    assert synced == [str(tmp_path / "a.txt.tmp"), str(tmp_path)]
    assert (tmp_path / "a.txt").read_text() == "hello"


# -- 7. security ------------------------------------------------------------------------------------
def test_every_torch_load_is_weights_only() -> None:
    import ast

    root = Path(__file__).parents[3] / "packages"
    calls = 0
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                calls += 1
                kw = {k.arg: k.value for k in node.keywords}
                assert "weights_only" in kw and ast.literal_eval(kw["weights_only"]) is True, f"{path}: {ast.unparse(node)}"
    assert calls >= 1


def test_torch_floor_is_2_6_where_torch_load_is_used() -> None:
    import tomllib

    root = Path(__file__).parents[3] / "packages"
    for pkg in ("sae-core", "sae-text"):
        deps = tomllib.loads((root / pkg / "pyproject.toml").read_text())["project"]["dependencies"]
        assert "torch>=2.6" in [d.replace(" ", "") for d in deps], pkg


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/sae-pwned",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path) -> None:
    import torch
    from sae_text.adapters.tlens import _load_weights

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": Evil()}, path)
    with pytest.raises(SAEError, match="not a state dict of tensors torch can load safely"):
        _load_weights(str(path), "cpu")
    torch.save({"w": torch.ones(2)}, path)
    assert torch.equal(_load_weights(str(path), "cpu")["w"], torch.ones(2))


def test_upload_refuses_symlinks_that_leave_the_run(run_cli, reference, tmp_path: Path) -> None:
    _, straight = reference
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (run / "topk-k4" / "notes.txt").symlink_to(secret)
    code, _, err = run_cli("upload", str(run), "--repo", "alice/x", "--endpoint", "http://127.0.0.1:9")
    assert_one_line_error(code, err, f"{run / 'topk-k4' / 'notes.txt'} is a symlink to {secret}", "outside")


def test_upload_follows_symlinks_inside_the_run(run_cli, reference, tmp_path: Path, monkeypatch) -> None:
    from helpers.fake_hub import FakeHub

    _, straight = reference
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    (run / "topk-k4" / "readme.txt").write_text("inside")
    (run / "jumprelu" / "readme.txt").symlink_to(run / "topk-k4" / "readme.txt")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        code, _, err = run_cli("upload", str(run), "--repo", "alice/x", "--endpoint", hub.endpoint)
        assert code == 0, err
        assert hub.repos["alice/x"]["files"]["jumprelu/readme.txt"] == b"inside"


@pytest.mark.parametrize(("error", "message"), [
    ("validation", "is not a valid Hub repo id"),
    ("local", "cannot write (/data/x.bin): permission denied"),
    ("disk", "no space left on the device (/data/x.bin)"),
    ("network", "could not reach the Hub"),
    ("other", "the Hub transfer for 'a/b' failed: RuntimeError: boom"),
])
def test_hub_errors_name_what_failed(error: str, message: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from sae_core.hub import _hub_error

    exc = {
        "validation": HFValidationError("Repo id must use alphanumeric chars"),
        "local": PermissionError(errno.EACCES, "Permission denied", "/data/x.bin"),
        "disk": OSError(errno.ENOSPC, "No space left on device", "/data/x.bin"),
        "network": ConnectionError("connection refused"),
        "other": RuntimeError("boom"),
    }[error]
    text = str(_hub_error(exc, "a/b"))
    assert message in text
    if error != "network":
        assert "could not reach" not in text


def test_download_into_a_file_is_a_local_error(run_cli, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = run_cli("download", "alice/x", "--out", str(target), "--endpoint", "http://127.0.0.1:9")
    assert_one_line_error(code, err, f"--out {target} is a file")


def test_nonfinite_helpers_see_bf16_nan(tmp_path: Path) -> None:
    from sae_core.stores.local.reader import count_nonfinite

    words = np.array([0x7FC0, 0x7F80, 0xFF80, 0x3F80, 0x0000], dtype=np.uint16)  # nan, inf, -inf, 1.0, 0.0
    assert count_nonfinite(words, "bfloat16") == 3
    assert count_nonfinite(np.array([np.nan, 1.0, np.inf], dtype="<f2"), "float16") == 2
