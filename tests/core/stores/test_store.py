"""Local store: round trips, shuffle coverage, filters, resume after a kill, clear errors."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.stores import make_meta, unique_acts, write_cache
from sae_core.errors import StoreError
from sae_core.protocols import BatchPlan
from sae_core.stores import open_reader
from sae_core.stores.local.reader import LocalReader

HERE = Path(__file__).resolve().parents[2]  # tests/: where `helpers` imports from


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_roundtrip_all_dtypes(tmp_path: Path, dtype: str) -> None:
    meta = make_meta(dtype=dtype, d_model=5)
    path = write_cache(tmp_path, meta, 23)
    reader = open_reader(path)
    assert reader.n_examples == 23 and reader.meta.complete and reader.meta.n_examples == 23
    acts, index = reader.read_examples(0, 23)
    expected = unique_acts(0, 23, meta).to(getattr(torch, dtype)).float()
    assert torch.equal(acts, expected)
    assert np.array_equal(index["example"][:, 0], np.arange(23))
    assert np.array_equal(index["position"][0], np.arange(3))
    assert (index["token"] == -1).all() and (index["valid"] == 1).all()
    shards = json.loads((path / "shards.json").read_text())["shards"]
    assert [s["n_examples"] for s in shards] == [10, 10, 3]


def test_shuffle_covers_every_sample_once(tmp_path: Path) -> None:
    meta = make_meta(n_layers=2, tokens=3)
    path = write_cache(tmp_path, meta, 101)
    # tiny chunks/buffer force many windows, so the test exercises the window logic
    reader = open_reader(path, buffer_bytes=400, chunk_bytes=100)
    kw = {"layers": [1], "tokens": "all", "drop_last": False}
    seen = torch.cat([b[:, 0, 0] for b in reader.batches(BatchPlan(16, seed=3, epoch=0, **kw))])
    expected = sorted(r * 100 + 10 + t for r in range(101) for t in range(3))
    assert sorted(seen.tolist()) == expected
    again = torch.cat([b[:, 0, 0] for b in reader.batches(BatchPlan(16, seed=3, epoch=0, **kw))])
    assert torch.equal(seen, again)  # deterministic given (seed, epoch)
    other = torch.cat([b[:, 0, 0] for b in reader.batches(BatchPlan(16, seed=3, epoch=1, **kw))])
    assert not torch.equal(seen, other) and sorted(other.tolist()) == expected
    assert not torch.equal(seen, torch.tensor(sorted(seen.tolist())))  # actually shuffled
    assert reader.n_tokens("all") == 303


def test_drop_last_and_start_batch(tmp_path: Path) -> None:
    path = write_cache(tmp_path, make_meta(), 50)
    reader = open_reader(path)
    full = list(reader.batches(BatchPlan(16, seed=1)))
    assert [len(b) for b in full] == [16] * (150 // 16)
    resumed = list(reader.batches(BatchPlan(16, seed=1, start_batch=3)))
    assert len(resumed) == len(full) - 3
    assert all(torch.equal(a, b) for a, b in zip(full[3:], resumed, strict=True))


def test_token_filters_and_valid_mask(tmp_path: Path) -> None:
    meta = make_meta(tokens=4, kinds=["cls", "register", "patch", "patch"])
    path = write_cache(tmp_path, meta, 30, valid_fn=lambda rows: np.tile([1, 1, 1, 0], (len(rows), 1)))
    reader = open_reader(path)
    cls = torch.cat(list(reader.batches(BatchPlan(8, tokens="cls", layers=[0], drop_last=False))))[:, 0, 0]
    assert sorted(cls.tolist()) == [r * 100 for r in range(30)]
    patch = torch.cat(list(reader.batches(BatchPlan(8, tokens="patch", layers=[-1], drop_last=False))))[:, 0, 0]
    assert sorted(patch.tolist()) == [r * 100 + 10 + 2 for r in range(30)]  # position 3 is invalid
    assert reader.n_tokens("patch") == 30 and reader.n_tokens("all") == 90
    seq = torch.cat(list(reader.batches(BatchPlan(8, tokens="register", shuffle=False, drop_last=False))))
    assert seq[:, 1, 0].tolist() == [r * 100 + 10 + 1 for r in range(30)]
    with pytest.raises(StoreError, match="unknown token filter"):
        next(reader.batches(BatchPlan(8, tokens="patches")))
    with pytest.raises(StoreError, match="has no 'token' tokens"):
        next(reader.batches(BatchPlan(8, tokens="token")))
    with pytest.raises(StoreError, match="out of range"):
        next(reader.batches(BatchPlan(8, layers=[5])))


def test_text_windows_stay_in_one_shard(tmp_path: Path) -> None:
    """Rows of one example (text windows of one document) are never split across shards."""
    from sae_core.protocols import ActivationBatch
    from sae_core.stores import open_writer

    meta = make_meta()
    writer = open_writer(tmp_path, meta, shard_examples=4)
    doc_of_row = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3])
    for lo in range(0, len(doc_of_row), 3):
        ids = doc_of_row[lo : lo + 3]
        writer.write(ActivationBatch(acts=unique_acts(lo, len(ids), meta), example_ids=ids))
    path = writer.close()
    shards = json.loads((path / "shards.json").read_text())["shards"]
    for a, b in itertools.pairwise(shards):
        assert a["last_example"] < b["first_example"]
    assert sum(s["n_examples"] for s in shards) == len(doc_of_row)


def test_errors_wrong_dtype_truncated_not_a_cache(tmp_path: Path) -> None:
    path = write_cache(tmp_path, make_meta(dtype="float16"), 20)
    with pytest.raises(StoreError, match="stores float16 activations, not bfloat16"):
        LocalReader(path, expect_dtype="bf16")
    with pytest.raises(StoreError, match="not an activation cache"):
        open_reader(tmp_path / "nope" if False else tmp_path.parent)
    with pytest.raises(StoreError, match="store root"):
        open_reader(tmp_path)
    shard = path / "acts-000001.bin"
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 8)
    with pytest.raises(StoreError, match=r"acts-000001.bin is truncated .* re-run the same `sae cache`"):
        open_reader(path)


def test_truncated_shard_is_rewritten_on_resume(tmp_path: Path) -> None:
    meta = make_meta()
    path = write_cache(tmp_path, meta, 25)
    reference = {p.name: p.read_bytes() for p in path.glob("*.bin")}
    with open(path / "acts-000001.bin", "r+b") as f:
        f.truncate(100)
    write_cache(tmp_path, meta, 25)
    assert {p.name: p.read_bytes() for p in path.glob("*.bin")} == reference
    assert open_reader(path).n_examples == 25


WRITER_SCRIPT = """
import sys, time
sys.path.insert(0, {here!r})
import numpy as np
from sae_core.protocols import ActivationBatch
from sae_core.stores import open_writer
from helpers.stores import make_meta, unique_acts
meta = make_meta(d_model=256)
w = open_writer({root!r}, meta, shard_examples=50)
for lo in range(w.n_done, 1000, 10):
    w.write(ActivationBatch(acts=unique_acts(lo, 10, meta), example_ids=np.arange(lo, lo + 10)))
    time.sleep({delay})
w.close()
"""


def test_kill_and_resume_leaves_no_corrupt_shard(tmp_path: Path) -> None:
    meta = make_meta(d_model=256)
    root = tmp_path / "killed"
    script = WRITER_SCRIPT.format(here=str(HERE), root=str(root), delay=0.02)
    proc = subprocess.Popen([sys.executable, "-c", script])
    shards_json = root / meta.fingerprint() / "shards.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        if shards_json.exists() and len(json.loads(shards_json.read_text() or "{}").get("shards", [])) >= 3:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    path = root / meta.fingerprint()
    listed = json.loads(shards_json.read_text())["shards"]
    assert 3 <= len(listed) < 20
    meta_doc = json.loads((path / "metadata.json").read_text())
    assert not meta_doc["complete"]
    reader = open_reader(path)  # every listed shard is complete
    assert reader.n_examples == sum(s["n_examples"] for s in listed)
    # resume to the end, then compare with an uninterrupted write
    subprocess.run([sys.executable, "-c", script.replace("time.sleep(0.02)", "pass")], check=True)
    assert not list(path.glob("*.tmp"))
    clean = tmp_path / "clean"
    subprocess.run(
        [sys.executable, "-c", WRITER_SCRIPT.format(here=str(HERE), root=str(clean), delay=0)], check=True
    )
    clean_path = clean / meta.fingerprint()
    names = sorted(p.name for p in clean_path.iterdir())
    assert names == sorted(p.name for p in path.iterdir() if p.name != "cache_runs.jsonl")
    for name in names:
        assert (clean_path / name).read_bytes() == (path / name).read_bytes(), name


def test_different_cache_in_same_directory_is_an_error(tmp_path: Path) -> None:
    from sae_core.stores import open_writer

    meta = make_meta()
    path = write_cache(tmp_path, meta, 5)
    doc = json.loads((path / "metadata.json").read_text())
    doc["d_model"] = 999
    doc["layers"] = ["other"]
    (path / "metadata.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="already holds a different cache"):
        open_writer(tmp_path, meta)


def test_info_on_cache(run_cli, tmp_path: Path) -> None:
    path = write_cache(tmp_path, make_meta(), 12)
    code, out, _ = run_cli("info", str(path))
    data = json.loads(out)
    assert code == 0 and data["kind"] == "cache" and data["examples_written"] == 12 and data["shards"] == 2
