"""Helpers for the reliability tests: tiny runs, a slowed-down `sae train` subprocess to signal or
race, read-only directories, and one-line-error assertions."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_core.protocols import ActivationBatch, CacheMetadata
from sae_core.stores import open_writer

HERE = Path(__file__).parent

#: A tiny sweep: TopK and JumpReLU train as two banks on one stream.
SWEEP = '[sae]\narch = ["topk", "jumprelu"]\nk = 4\nexp_factor = 2\nlr = 1e-3\n'
FLAGS = ("--layer", "1", "--batch-size", "128", "--log-every", "5", "--checkpoint-every", "7", "-q")


def train_args(cache: Path, out: Path, *extra: str, steps: int = 40) -> list[str]:
    """`sae train` of the tiny sweep (its TOML written beside the cache)."""
    sweep = cache.parent / "sweep.toml"
    if not sweep.exists():
        sweep.write_text(SWEEP)
    return ["train", "--data", str(cache), "--out", str(out), "--sweep", str(sweep), "--steps", str(steps),
            *FLAGS, *extra]


def small_cache(root: Path, *, n: int = 2000, d: int = 16, seed: int = 0, shard: int = 500,
                poison: dict[int, float] | None = None, close: bool = True) -> Path:
    """A gaussian cache of ``n`` rows (2 layers, 1 token) in shards of ``shard`` rows; ``poison``
    sets layer 1 of row r to the value (NaN/Inf) at column 0..."""
    meta = CacheMetadata(adapter="test", model=f"rel{seed}", layers=["l0", "l1"], d_model=d, dtype="float32",
                         tokens_per_example=1, token_kinds=["token"], dataset={"spec": f"rel{n}"})
    gen = torch.Generator().manual_seed(seed)
    acts = torch.randn(n, 2, 1, d, generator=gen) * 3 + 1  # (n, L, T, d)
    for row, value in (poison or {}).items():
        acts[row, 1, 0, :] = value
    w = open_writer(root, meta, shard_examples=shard)
    for lo in range(0, n, 250):
        w.write(ActivationBatch(acts=acts[lo : lo + 250], example_ids=np.arange(lo, min(n, lo + 250))))
    if not close:
        w.abort()
        return w.path
    return w.close()


SLOW_TRAIN = """
import sys, time
import sae_core.train.optim as optim
step = optim.BankAdam.step
def slow(self, *a, **k):
    time.sleep({delay})
    return step(self, *a, **k)
optim.BankAdam.step = slow
from sae_core.cli import main
main(sys.argv[1:])
"""


def start_slow_train(args: list[str], delay: float = 0.02) -> subprocess.Popen:
    """`sae train ARGS` in a subprocess whose optimizer steps sleep ``delay`` s (numerics unchanged),
    so a test can reach it mid-run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", SLOW_TRAIN.format(delay=delay), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_metrics(proc: subprocess.Popen, metrics: Path, lines: int, timeout: float = 90) -> None:
    """Until ``metrics`` has ``lines`` records (the run is stepping), or fail with its output."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= lines:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"training subprocess did not reach {lines} metric lines: rc={proc.returncode} {err[-2000:]}")


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit status 1, stderr exactly one ``error: ...`` line containing every needle, no traceback."""
    lines = err.strip().splitlines()
    assert code == 1, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def safetensors_equal(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), (a, k)


def checkpoints_equal(a: Path, b: Path) -> None:
    """Every SAE of run ``a`` equals run ``b``'s bit for bit, with the same logged FVUs."""
    names = json.loads((a / "sweep.json").read_text())["saes"]
    assert names
    for s in names:
        safetensors_equal(a / s["path"] / "sae.safetensors", b / s["path"] / "sae.safetensors")
        fa = [json.loads(x)["fvu"] for x in (a / s["path"] / "metrics.jsonl").read_text().splitlines()]
        fb = [json.loads(x)["fvu"] for x in (b / s["path"] / "metrics.jsonl").read_text().splitlines()]
        assert fa == fb


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name -> bytes), the run lock excluded."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
            and p.name != ".lock"}


@contextlib.contextmanager
def read_only(src: Path, dst: Path) -> Iterator[Path]:
    """``dst``: a read-only view of ``src`` — a read-only bind mount as root (where chmod does not
    stop root), a chmod'ed copy otherwise; skips the test where neither is possible."""
    dst.mkdir(parents=True)
    if os.geteuid() == 0:
        ok = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True).returncode == 0 and \
            subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], capture_output=True).returncode == 0
        if not ok:
            subprocess.run(["umount", str(dst)], capture_output=True)
            pytest.skip("cannot make a read-only bind mount here")
        try:
            yield dst
        finally:
            subprocess.run(["umount", str(dst)], capture_output=True)
        return
    shutil.rmtree(dst)
    shutil.copytree(src, dst)
    modes = []
    for p in [dst, *dst.rglob("*")]:
        modes.append((p, p.stat().st_mode))
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        yield dst
    finally:
        for p, mode in reversed(modes):
            p.chmod(mode)
