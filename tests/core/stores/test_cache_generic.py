"""`sae cache` end to end through a third-party adapter (the example plugin's `mlp`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from sae_core.protocols import AdapterRequest
from sae_core.stores import open_reader
from sae_example_plugin.components import GaussianDataset, MLPAdapter


def test_cache_cli_writes_store_equal_to_direct_forward(run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli(
        "cache", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0,-1", "--data", "gaussian:50",
        "--out", str(tmp_path), "--batch-size", "8", "--shard-examples", "16", "-q",
    )
    assert code == 0, err
    path = Path(out.strip().splitlines()[-1])
    assert path.parent == tmp_path
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["complete"] and meta["n_examples"] == 50 and meta["layers"] == ["hidden.0", "hidden.2"]
    assert meta["dataset"]["spec"] == "gaussian:50"
    reader = open_reader(path)
    acts, index = reader.read_examples(0, 50)
    adapter = MLPAdapter(AdapterRequest(model="rand-mlp", layers=["0", "-1"]))
    expected = torch.cat([b.acts for b in adapter.iter_batches(GaussianDataset("50"), batch_size=50)])
    torch.testing.assert_close(acts, expected)
    assert np.array_equal(index["example"][:, 0], np.arange(50))
    # a second identical run finds the finished cache and writes nothing new
    code, out2, _ = run_cli(
        "cache", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0,-1", "--data", "gaussian:50",
        "--out", str(tmp_path), "--shard-examples", "16", "-q",
    )
    assert code == 0 and out2.strip() == str(path)


def test_cache_cli_bad_inputs(run_cli, tmp_path: Path) -> None:
    base = ["cache", "--adapter", "mlp", "--model", "m", "--out", str(tmp_path), "-q"]
    code, _, err = run_cli(*base, "--layers", "7", "--data", "gaussian:4")
    assert code == 1 and "out of range" in err
    code, _, err = run_cli(*base, "--layers", "0", "--data", "nosuch:4")
    assert code == 1 and "unknown vector dataset 'nosuch'" in err and "gaussian" in err
    code, _, err = run_cli(*base, "--layers", "0", "--data", "gaussian:4", "--dtype", "fp8")
    assert code == 1 and "unknown dtype" in err
    code, _, err = run_cli(*base, "--data", "gaussian:4")
    assert code == 1 and "no layers given" in err
    code, _, err = run_cli(*base, "--layers", "0", "--data", "gaussian:4", "--data-opt", "colour=red")
    assert code == 1 and "unknown option" in err
