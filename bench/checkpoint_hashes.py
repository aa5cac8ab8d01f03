"""Hashes of the checkpoints of a fixed sweep: every architecture and a transcoder, trained on CPU.

    uv run python bench/checkpoint_hashes.py > before.json   # ... refactor ...
    uv run python bench/checkpoint_hashes.py | diff - before.json

Identical output means the same checkpoints bit for bit (weights and every metrics line, timings
left out): how issue 24's restructuring was checked to change no behaviour. Not a benchmark; it
lives here with the other scripts that measure the toolkit.
"""
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sae_core.protocols import ActivationBatch, CacheMetadata
from sae_core.stores import open_writer

tmp = Path(tempfile.mkdtemp())
meta = CacheMetadata(adapter="test", model="gauss", layers=["l0", "l1"], d_model=16, dtype="float32",
                     tokens_per_example=1, token_kinds=["token"], dataset={"spec": "gauss"})
gen = torch.Generator().manual_seed(0)
w = open_writer(tmp / "c", meta, shard_examples=1000)
for lo in range(0, 4000, 500):
    w.write(ActivationBatch(acts=torch.randn(500, 2, 1, 16, generator=gen) * 3 + 1, example_ids=np.arange(lo, lo + 500)))
cache = w.close()
(tmp / "s.toml").write_text(
    '[data]\nlayer = 1\nbatch_size = 128\n[train]\nsteps = 40\nlog_every = 10\ncheckpoint_every = 15\n'
    '[sae]\narch = ["topk", "batchtopk", "matryoshka", "jumprelu", "relu", "gated"]\nk = 4\nexp_factor = 2\n')
subprocess.run([sys.executable, "-m", "sae_core", "train", "--data", str(cache), "--out", str(tmp / "r"),
                "--sweep", str(tmp / "s.toml"), "-q"], check=True, stdout=subprocess.DEVNULL)
subprocess.run([sys.executable, "-m", "sae_core", "train", "--data", str(cache), "--out", str(tmp / "t"),
                "--layer", "0", "--layer-out", "1", "--arch", "topk", "--k", "3", "--steps", "30",
                "--batch-size", "100", "-q"], check=True, stdout=subprocess.DEVNULL)
out = {}
for p in sorted(tmp.rglob("sae.safetensors")):
    out[str(p.relative_to(tmp))] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
for p in sorted(tmp.rglob("metrics.jsonl")):
    rows = [json.loads(x) for x in p.read_text().splitlines()]
    keep = [{k: v for k, v in r.items() if not any(s in k for s in ("time", "per_s", "elapsed", "wall", "eta"))} for r in rows]
    out[str(p.relative_to(tmp))] = hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
print(json.dumps(out, indent=1))
