"""sae-vision: cached activations equal hooked forwards of tiny random ViTs on real photos;
resume after a kill; corrupt images; clear errors; the hub path with the download mocked."""

from __future__ import annotations

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
from helpers.vision import TINY_CLIP
from sae_core.datasets import open_dataset
from sae_core.stores import open_reader

TIMM_ARGS = ["--model", "vit_tiny_patch16_224", "--opt", "pretrained=false", "--opt", "img_size=64", "--opt", "depth=3"]


@pytest.fixture(scope="module")
def clip_cfg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "tiny_clip_test.json"
    path.write_text(json.dumps(TINY_CLIP))
    return path


def _cache(run_cli, out: Path, *args: str) -> Path:
    code, stdout, err = run_cli("cache", "--data", "samples", "--data-opt", "n=12", "--out", str(out),
                                "--batch-size", "5", "-q", *args)
    assert code == 0, err
    return Path(stdout.strip().splitlines()[-1])


def _reference(model: torch.nn.Module, blocks, pixels: torch.Tensor, ids: list[int], run) -> torch.Tensor:
    outs: dict[int, torch.Tensor] = {}
    handles = [blocks[i].register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o)) for i in ids]
    with torch.no_grad():
        run(pixels)
    for h in handles:
        h.remove()
    return torch.stack([outs[i] for i in ids], dim=1)


def test_clip_cache_equals_hooked_forward(run_cli, tmp_path: Path, clip_cfg: Path) -> None:
    import open_clip

    path = _cache(run_cli, tmp_path, "--adapter", "clip", "--model", f"config:{clip_cfg}", "--layers", "-2,0")
    reader = open_reader(path)
    meta = reader.meta
    assert meta.layers == ["blocks.1", "blocks.0"] and meta.tokens_per_example == 17
    assert meta.token_kinds == ["cls"] + ["patch"] * 16 and meta.extra["grid"] == [4, 4]
    acts, index = reader.read_examples(0, 12)
    torch.manual_seed(0)
    open_clip.add_model_config(str(clip_cfg))
    model, _, preprocess = open_clip.create_model_and_transforms(clip_cfg.stem, pretrained=None)
    model.eval()
    ds = open_dataset("samples", "image", n=12)
    pixels = torch.stack([preprocess(ds[i].data) for i in range(12)])
    ref = _reference(model, model.visual.transformer.resblocks, pixels, [1, 0], model.visual)
    torch.testing.assert_close(acts, ref, rtol=1e-4, atol=1e-4)
    assert np.array_equal(index["example"][:, 0], np.arange(12))


def test_timm_cache_equals_hooked_forward(run_cli, tmp_path: Path) -> None:
    import timm
    from timm.data import create_transform, resolve_data_config

    path = _cache(run_cli, tmp_path, "--adapter", "timm", *TIMM_ARGS, "--layers", "1")
    acts, _ = open_reader(path).read_examples(0, 12)
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64, depth=3).eval()
    cfg = resolve_data_config({}, model=model)
    cfg["input_size"] = (3, 64, 64)
    tf = create_transform(**cfg)
    ds = open_dataset("samples", "image", n=12)
    pixels = torch.stack([tf(ds[i].data) for i in range(12)])
    ref = _reference(model, model.blocks, pixels, [1], model.forward_features)
    torch.testing.assert_close(acts, ref, rtol=1e-4, atol=1e-4)


def test_register_tokens_are_labelled(run_cli, tmp_path: Path) -> None:
    path = _cache(run_cli, tmp_path, "--adapter", "timm", "--model", "vit_small_patch14_reg4_dinov2", "--opt", "pretrained=false",
                  "--opt", "img_size=28", "--opt", "depth=1", "--opt", "embed_dim=24", "--opt", "num_heads=2", "--layers", "0")
    meta = open_reader(path).meta
    assert meta.token_kinds == ["cls"] + ["register"] * 4 + ["patch"] * 4


def test_corrupt_images_skipped_and_counted(run_cli, tmp_path: Path, clip_cfg: Path) -> None:
    ds = open_dataset("samples", "image", n=5)
    folder = tmp_path / "imgs"
    for i in range(5):
        (folder / ("cats" if i % 2 else "dogs")).mkdir(parents=True, exist_ok=True)
        ds[i].data.save(folder / ("cats" if i % 2 else "dogs") / f"img{i}.png")
    (folder / "dogs" / "broken.png").write_bytes(b"not an image at all")
    code, stdout, err = run_cli("cache", "--adapter", "clip", "--model", f"config:{clip_cfg}", "--layers", "0",
                                "--data", f"folder:{folder}", "--out", str(tmp_path / "c"), "-q")
    assert code == 0, err
    path = Path(stdout.strip())
    reader = open_reader(path)
    assert reader.n_examples == 5
    folder_ds = open_dataset(f"folder:{folder}", "image")
    broken = next(i for i in range(len(folder_ds)) if folder_ds.files[i].name == "broken.png")
    _, index = reader.read_examples(0, 5)
    assert broken not in index["example"][:, 0]
    runs = [json.loads(x) for x in (path / "cache_runs.jsonl").read_text().splitlines()]
    assert runs[-1]["skipped_unreadable"] == 1
    assert folder_ds[0].label in ("cats", "dogs")


def test_clear_errors(run_cli, tmp_path: Path, clip_cfg: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["cache", "--out", str(tmp_path / "c"), "-q"]
    cases = [
        (["--adapter", "clip", "--model", f"config:{clip_cfg}", "--layers", "9", "--data", "samples"], "layer 9 is out of range"),
        (["--adapter", "clip", "--model", "ViT-Nope-99/openai", "--layers", "0", "--data", "samples"], "unknown open_clip model"),
        (["--adapter", "timm", "--model", "vit_nope_nope", "--layers", "0", "--data", "samples"], "unknown timm model"),
        (["--adapter", "clip", "--model", f"config:{clip_cfg}", "--layers", "0", "--data", f"folder:{empty}"], "contains no images"),
        (["--adapter", "clip", "--model", f"config:{clip_cfg}", "--layers", "0", "--data", f"folder:{tmp_path / 'x'}"],
         "no such directory"),
    ]
    for args, message in cases:
        code, _, err = run_cli(*base, *args)
        assert code == 1 and message in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_timm_hub_path_with_mocked_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretrained weights go through timm's real loader; only hf_hub_download is replaced."""
    import timm
    import timm.models._hub as hub
    from sae_core.protocols import AdapterRequest
    from sae_vision.adapters.timm import TimmAdapter
    from safetensors.torch import save_file

    torch.manual_seed(123)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        if not filename.endswith(".safetensors"):
            raise FileNotFoundError(filename)
        return str(weights)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    adapter = TimmAdapter(AdapterRequest(model="vit_tiny_patch16_224.augreg_in21k_ft_in1k", layers=["-1"]))
    assert calls and calls[0][0] == "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    torch.testing.assert_close(adapter.model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


KILL_SCRIPT = """
import sys
from sae_core.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_resume_after_kill_gives_identical_store(tmp_path: Path) -> None:
    args = ["cache", "--adapter", "timm", *TIMM_ARGS, "--layers", "0,2", "--data", "samples", "--data-opt", "n=96",
            "--batch-size", "8", "--shard-examples", "16", "-q"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, *args, "--out", str(killed)])
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list(killed.glob("*/shards.json"))
        if found and len(json.loads(found[0].read_text()).get("shards", [])) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (path,) = list(killed.glob("*/"))
    assert not json.loads((path / "metadata.json").read_text())["complete"]
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, *args, "--out", str(killed)], check=True)
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, *args, "--out", str(clean)], check=True)
    (clean_path,) = list(clean.glob("*/"))
    assert clean_path.name == path.name
    for f in [*sorted(clean_path.glob("*.bin")), clean_path / "shards.json", clean_path / "metadata.json"]:
        assert f.read_bytes() == (path / f.name).read_bytes(), f.name
