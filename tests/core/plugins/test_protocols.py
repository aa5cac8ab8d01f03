"""What the protocols of ``sae_core.protocols`` promise plugin authors, checked directly.

- ImageGeometry: the ViT adapters' metadata is byte-for-byte what it was (old caches keep their
  fingerprints), bad values are one-line errors naming the key (at cache time and in the viewer);
- the store reader's defaults (a store implementing only ``n_examples`` and ``read_examples``):
  every selected valid token once per epoch, seeded order, rank shares that add up to the batch,
  ``batch_sample_ids``/``sample_source`` that locate samples, ``n_tokens``;
- optional adapter methods are found by ``supports``, not ``hasattr``; an incomplete Bank
  subclass fails at construction;
- ``sae export`` writes a run completely or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_core import (
    INDEX_DTYPE,
    ActivationReader,
    Bank,
    BatchPlan,
    CacheMetadata,
    DataError,
    ImageGeometry,
    ModelAdapter,
)

TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 48, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}}


# -- image geometry ---------------------------------------------------------------------------------
def test_vit_metadata_is_unchanged(tmp_path: Path) -> None:
    """The keys and values the ViT adapters wrote before ImageGeometry existed (so a cache made
    then has the same fingerprint now and resumes)."""
    from sae_core import AdapterRequest, get_component

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    adapter = get_component("adapter", "clip").build(AdapterRequest(model=f"config:{cfg}", layers=["-1"]))
    extra = adapter.spec().extra
    old = {"grid": [4, 4], "patch_size": 16, "image_size": [64, 64],
           "preprocess": {"resize_shorter": 64, "center_crop": [64, 64]}}
    assert {k: extra[k] for k in old} == old
    assert json.dumps(ImageGeometry.from_extra(extra, n_patches=16).to_extra(), sort_keys=True) == json.dumps(old, sort_keys=True)


@pytest.mark.parametrize(("extra", "needle"), [
    ({"grid": [4, 4], "image_size": 224}, "'image_size' must be [height, width]"),
    ({"grid": [4, 4], "preprocess": "resize"}, "'preprocess' must be an object"),
    ({"grid": [4, 4], "preprocess": {"resize_shorter": "big"}}, "'preprocess.resize_shorter'"),
    ({"grid": [4, 4], "preprocess": {"center_crop": 32}}, "'preprocess.center_crop'"),
    ({"grid": [3, 4]}, "has 12 cells but the adapter produces 16 patch tokens"),
    ({"grid": "4x4"}, "'grid' must be [rows, cols]"),
    ({"image_size": [32, 32]}, None),  # no grid: 16 patches make a square one
])
def test_image_geometry_errors_name_the_key(extra: dict, needle: str | None) -> None:
    if needle is None:
        assert ImageGeometry.from_extra(extra, n_patches=16).grid == (4, 4)
        return
    with pytest.raises(DataError) as e:
        ImageGeometry.from_extra(extra, n_patches=16)
    assert needle in str(e.value) and "docs/plugins.md" in str(e.value)


def test_viewer_heatmap_with_bad_metadata_is_a_clear_error() -> None:
    from PIL import Image
    from sae_viewer import data

    image = Image.new("RGB", (48, 40))
    with pytest.raises(DataError, match="'preprocess' must be an object"):
        data.heatmap_overlay(image, np.ones(16, np.float32), {"grid": [4, 4], "preprocess": "resize"})
    out = data.heatmap_overlay(image, np.ones(16, np.float32), {"grid": [4, 4], "image_size": [32, 32]})
    assert out.size == (224, 224)


def test_cache_refuses_an_adapter_with_bad_geometry(monkeypatch: pytest.MonkeyPatch, run_cli, tmp_path: Path) -> None:
    from sae_example_plugin import patches

    real = patches.PatchAdapter.spec

    def bad_spec(self):
        spec = real(self)
        spec.extra["image_size"] = 32  # a guess: an int instead of [height, width]
        return spec

    monkeypatch.setattr(patches.PatchAdapter, "spec", bad_spec)
    code, _, err = run_cli("cache", "--adapter", "patches", "--model", "toy", "--layers", "0", "--data", "shapes:4",
                           "--out", str(tmp_path), "-q")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "adapter 'patches'" in err and "'image_size' must be [height, width]" in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


# -- the reader's defaults ----------------------------------------------------------------------
class MemoryReader(ActivationReader):
    """A store reader implementing only what the protocol requires."""

    def __init__(self, acts: torch.Tensor, valid: np.ndarray, kinds: list[str]) -> None:
        n, n_layers, t, d = acts.shape
        self.acts, self.path = acts, Path("memory")
        self.meta = CacheMetadata(adapter="a", model="m", layers=[f"l{i}" for i in range(n_layers)], d_model=d,
                                  dtype="float32", tokens_per_example=t, token_kinds=kinds, dataset={}, n_examples=n,
                                  complete=True)
        self.index = np.zeros((n, t), INDEX_DTYPE)
        self.index["example"] = np.arange(n)[:, None]
        self.index["position"] = np.arange(t)
        self.index["valid"] = valid

    @property
    def n_examples(self) -> int:
        return len(self.acts)

    def read_examples(self, start, stop, *, layers=None):
        acts = self.acts[start:stop]
        return (acts if layers is None else acts[:, layers]), self.index[start:stop]


@pytest.fixture
def reader() -> MemoryReader:
    n, t, d = 37, 3, 5
    ids = torch.arange(n * t, dtype=torch.float32).view(n, 1, t, 1)  # each token's value is its sample id
    acts = torch.cat([ids.expand(n, 1, t, d), -ids.expand(n, 1, t, d)], dim=1)  # (n, 2 layers, t, d)
    valid = np.ones((n, t), np.uint8)
    valid[::4, 2] = 0  # some padding
    return MemoryReader(acts, valid, ["cls", "patch", "patch"])


def test_default_batches_cover_every_selected_token_once_per_epoch(reader: MemoryReader) -> None:
    expected = sorted(r * 3 + p for r in range(37) for p in (1, 2) if not (p == 2 and r % 4 == 0))
    assert reader.n_tokens("patch") == len(expected) and reader.n_tokens("cls") == 37
    seen = [x[:, 0, 0] for x in reader.batches(BatchPlan(8, layers=["l0"], tokens="patch", seed=3, drop_last=False))]
    assert sorted(int(v) for v in torch.cat(seen)) == expected
    again = [x[:, 0, 0] for x in reader.batches(BatchPlan(8, layers=[0], tokens="patch", seed=3, drop_last=False))]
    assert all(torch.equal(a, b) for a, b in zip(seen, again, strict=True))  # seeded
    other_plan = BatchPlan(8, layers=[0], tokens="patch", seed=4, drop_last=False)
    other = torch.cat([x[:, 0, 0] for x in reader.batches(other_plan)])
    assert not torch.equal(torch.cat(seen), other)
    layer1 = next(iter(reader.batches(BatchPlan(8, layers=[1], tokens="patch", seed=3))))
    assert torch.equal(layer1[:, 0, 0], -seen[0])


def test_default_batches_resume_split_and_locate(reader: MemoryReader) -> None:
    full = list(reader.batches(BatchPlan(6, tokens="patch", seed=1)))
    assert len(full) == reader.n_tokens("patch") // 6  # drop_last
    assert torch.equal(next(iter(reader.batches(BatchPlan(6, tokens="patch", seed=1, start_batch=2)))), full[2])
    shares = [next(iter(reader.batches(BatchPlan(6, tokens="patch", seed=1, part=(r, 3))))) for r in range(3)]
    assert torch.equal(torch.cat(shares), full[0])
    ids = reader.batch_sample_ids(BatchPlan(6, tokens="patch", seed=1), 2)
    assert [int(v) for v in full[2][:, 0, 0]] == list(ids)
    src = reader.sample_source(int(ids[0]))
    assert src["row"] == ids[0] // 3 and src["example"] == ids[0] // 3 and src["position"] == ids[0] % 3


# -- adapters and banks -----------------------------------------------------------------------------
def test_optional_adapter_methods_are_declared_not_guessed() -> None:
    from sae_example_plugin.components import MLPAdapter
    from sae_example_plugin.patches import PatchAdapter

    assert PatchAdapter.supports("run_with_hooks") and not MLPAdapter.supports("run_with_hooks")
    assert not PatchAdapter.supports("splice_eval") and not ModelAdapter.supports("splice_eval")
    MLPAdapter.write_extras(object.__new__(MLPAdapter), Path("/nonexistent"))  # the default writes nothing


def test_a_bank_without_encode_fails_when_built() -> None:
    class Half(Bank):
        def train_forward(self, x, ctx):
            raise NotImplementedError

    with pytest.raises(TypeError, match="encode"):
        Half(4, 8, [object()])


# -- export: all or nothing ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from conftest import cli_runner

    sae = cli_runner()
    root = tmp_path_factory.mktemp("export")
    code, out, err = sae("cache", "--adapter", "mlp", "--model", "m", "--layers", "0", "--data", "gaussian:64",
                         "--out", str(root / "c"), "-q")
    assert code == 0, err
    (root / "sweep.toml").write_text('[sae]\narch = "topk"\nk = [2, 4]\nexp_factor = 1\n[train]\nsteps = 3\n'
                                     '[data]\nbatch_size = 16\n')
    code, _, err = sae("train", "--data", out.strip().splitlines()[-1], "--sweep", str(root / "sweep.toml"),
                       "--out", str(root / "run"), "-q")
    assert code == 0, err
    return root / "run"


def test_export_failing_midway_leaves_no_output(run: Path, run_cli, tmp_path: Path, monkeypatch) -> None:
    from sae_core.interop.saelens import SAELensExporter

    calls = []
    real = SAELensExporter.write

    def write(self, checkpoint, cfg, out):
        calls.append(checkpoint.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(out))  # the disk fills on the second SAE
        real(self, checkpoint, cfg, out)

    monkeypatch.setattr(SAELensExporter, "write", write)
    code, _, err = run_cli("export", str(run), "--out", str(tmp_path / "x"))
    assert code == 1 and "no space left" in err and len(calls) == 2
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []  # nothing, not even staging


def test_export_replaces_a_non_empty_out_only_when_asked(run: Path, run_cli, tmp_path: Path) -> None:
    out = tmp_path / "x"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    code, _, err = run_cli("export", str(run), "--out", str(out))
    assert code == 1 and "not empty" in err and "--overwrite" in err and (out / "mine.txt").exists()
    code, stdout, err = run_cli("export", str(run), "--out", str(out), "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["topk-k2", "topk-k4"] and len(stdout.split()) == 2
    assert list(tmp_path.iterdir()) == [out]
