"""Half-precision caches cross to the device as stored (sae_core.train.transfer): half the bytes,
the same fp32 batches, the same checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.stores import gaussian_cache
from sae_core.checkpoint import find_checkpoints, load_sae
from sae_core.protocols import BatchPlan
from sae_core.stores import open_reader
from sae_core.stores.local.reader import LocalReader
from sae_core.train import expand, run_training
from sae_core.train.transfer import transfer_dtype


def test_transfer_dtype_is_the_stored_half_dtype_on_cuda_only() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert transfer_dtype("bfloat16", cuda) is torch.bfloat16
    assert transfer_dtype("float16", cuda) is torch.float16
    assert transfer_dtype("float32", cuda) is None
    assert transfer_dtype("bfloat16", cpu) is None


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_batches_are_batch_sized_and_exact(tmp_path: Path, dtype: str) -> None:
    reader = open_reader(gaussian_cache(tmp_path / "c", n=2000, dtype=dtype))
    half = list(reader.batches(BatchPlan(256, seed=3, dtype=getattr(torch, dtype))))
    full = list(reader.batches(BatchPlan(256, seed=3)))
    assert len(half) == len(full) == 2000 // 256
    for h, f in zip(half, full, strict=True):
        assert h.dtype == getattr(torch, dtype) and h.shape == (256, 2, 16)  # one batch, nothing larger
        assert f.dtype == torch.float32
        assert torch.equal(h.float(), f)  # converting on the device gives the host's fp32 bit for bit


def _train(cache: Path, out: Path) -> dict[str, torch.Tensor]:
    cfg = expand(str(cache), 16, {"layer": 1, "batch_size": 128}, {"arch": "topk", "k": [4, 8], "d_sae": 64},
                 {"steps": 12, "log_every": 6}, str(out))
    run_training(cfg, progress=False)
    return {c.name: load_sae(c).W_dec.detach().clone() for c in find_checkpoints(out)}


def test_trainer_trains_the_same_from_half_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path (half batches handed to the device, fp32 made there), forced on CPU, trains the
    same SAEs bit for bit as the CPU path (fp32 made by the reader)."""
    cache = gaussian_cache(tmp_path / "c", n=2000, dtype="bfloat16")
    reference = _train(cache, tmp_path / "fp32")
    seen: list[tuple[torch.dtype, tuple[int, ...]]] = []
    batches = LocalReader.batches

    def spy(self, *args, **kwargs):
        for b in batches(self, *args, **kwargs):
            seen.append((b.dtype, tuple(b.shape)))
            yield b

    monkeypatch.setattr("sae_core.train.group.transfer_dtype", lambda stored, device: torch.bfloat16)
    monkeypatch.setattr(LocalReader, "batches", spy)
    half = _train(cache, tmp_path / "bf16")
    assert (torch.bfloat16, (128, 1, 16)) in seen  # the training stream: bf16, one batch at a time
    assert half.keys() == reference.keys()
    for name, w in reference.items():
        assert torch.equal(half[name], w), name
