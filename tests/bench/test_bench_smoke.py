"""The benchmark scripts still run (tiny sizes; the real numbers come from running them by hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_vs_peers_quick(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "vs_peers.py"), "--quick", "--data", "synthetic", "--d-sae", "256",
         "--batch-size", "128", "--steps", "4", "--sweep-steps", "2", "--dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| one TopK SAE (k=32) | sae |" in res.stdout and "| 8 TopK SAEs (k=16..72) | sparsify |" in res.stdout
    doc = json.loads((tmp_path / "out" / "vs_peers.json").read_text())
    for lib in ("saelens", "sparsify"):
        assert {e["k"] for e in doc["pareto"][lib]} == {16, 32, 64}
        assert all(0 < e["fvu"] < 2 for e in doc["pareto"][lib])
    assert (tmp_path / "out" / "vs_peers_fvu_l0.png").stat().st_size > 1000


def test_store_bench_quick(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "store_read.py"), "--size-gb", "0.02", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sae reader, shuffled" in res.stdout


@pytest.mark.slow
def test_live_training_bench_quick() -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "live_training.py"), "--docs", "20", "--batch-size", "128",
         "--buffers", "2048,4096"],
        capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| live, --buffer-tokens 2048 |" in res.stdout and "| cache then train" in res.stdout


@pytest.mark.slow
def test_cold_cache_bench_quick(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cold_cache.py"), "--ns", "2", "--dtypes", "bfloat16", "--rows", "8192",
         "--d-in", "32", "--d-sae", "64", "--batch-size", "1024", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "bfloat16 cache: 8,192 samples" in res.stdout and "sequential     2" in res.stdout
    assert "crossover" in res.stdout


@pytest.mark.slow
def test_train_throughput_bench_quick(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--steps", "2", "--batch-size", "256",
         "--d-in", "64", "--d-sae", "256", "--dir", str(tmp_path), "--aux-paths"],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "bank of 8 vs 8 sequential" in res.stdout and "GEMM ceiling: torch.mm (256 x 64) @ (64 x 256)" in res.stdout
    assert "peak memory: bank" in res.stdout and "AuxK paths" in res.stdout
    assert "encoder GEMM" in res.stdout and "update (projection, Adam, renorm)" in res.stdout
