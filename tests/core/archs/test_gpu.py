"""CUDA paths (skipped without a GPU): sparse TopK gradients, bf16 autocast training, pinned reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.archs import assert_topk_grads_match_dense
from helpers.stores import gaussian_cache
from sae_core.archs.ops import make_hyper
from sae_core.plugins import get_registry
from sae_core.protocols import BatchPlan
from sae_core.stores import open_reader

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("aux_block_ratio", [0.0, float("inf")])  # AuxK as ragged entries, as the dense block
def test_sparse_topk_gradients_match_dense_on_cuda(aux_block_ratio: float, monkeypatch: pytest.MonkeyPatch) -> None:
    from sae_core.archs.topk import TopKBank

    monkeypatch.setattr(TopKBank, "aux_block_ratio", aux_block_ratio)
    arch = get_registry().get("architecture", "topk").factory
    bank = arch.build_bank(64, 512, [make_hyper(arch.Hyper, "topk", {"k": k}, 512) for k in (8, 16)], device="cuda")
    dead = torch.zeros(2, 512, dtype=torch.bool, device="cuda")
    dead[:, :40] = True
    assert_topk_grads_match_dense(bank, torch.randn(256, 64, device="cuda"), dead, (8, 16), rtol=1e-3, atol=1e-4)


def test_sweep_trains_on_cuda_with_bf16_autocast(run_cli, tmp_path: Path) -> None:
    cache = gaussian_cache(tmp_path / "c")
    sweep = tmp_path / "s.toml"
    sweep.write_text('[data]\nlayer = 1\nbatch_size = 256\n[train]\nsteps = 60\nlog_every = 20\n'
                     '[sae]\narch = ["topk", "batchtopk", "jumprelu"]\nk = 4\nexp_factor = 4\n')
    code, _, err = run_cli("train", "--data", str(cache), "--sweep", str(sweep), "--out", str(tmp_path / "run"),
                           "--device", "cuda", "-q")
    assert code == 0, err
    for sae in json.loads((tmp_path / "run" / "sweep.json").read_text())["saes"]:
        lines = [json.loads(x) for x in (tmp_path / "run" / sae["path"] / "metrics.jsonl").read_text().splitlines()]
        assert lines[-1]["fvu"] < lines[0]["fvu"] and lines[-1]["fvu"] < 1.0, sae["name"]


def test_reader_delivers_batches_on_cuda(tmp_path: Path) -> None:
    reader = open_reader(gaussian_cache(tmp_path / "c", n=2000))
    cpu = next(reader.batches(BatchPlan(128, seed=3)))
    gpu = next(reader.batches(BatchPlan(128, seed=3, device="cuda")))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)


def test_bf16_cache_crosses_to_cuda_as_bf16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sae_core.train.transfer: a bf16 cache's training batches are handed to the GPU in bf16 (half
    the bytes), one batch at a time, and become fp32 there."""
    from sae_core.stores.local.reader import LocalReader
    from sae_core.train import expand, run_training

    handed: list[tuple[torch.dtype, tuple[int, ...]]] = []
    to_device = LocalReader._to_device

    def spy(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        handed.append((batch.dtype, tuple(batch.shape)))
        return to_device(batch, device)

    monkeypatch.setattr(LocalReader, "_to_device", staticmethod(spy))
    cache = gaussian_cache(tmp_path / "c", n=2000, dtype="bfloat16")
    cfg = expand(str(cache), 16, {"layer": 1, "batch_size": 128}, {"arch": "topk", "k": 4, "d_sae": 64},
                 {"steps": 10, "log_every": 5, "device": "cuda"}, str(tmp_path / "run"))
    run_training(cfg, progress=False)
    assert (torch.bfloat16, (128, 1, 16)) in handed
