"""Other tools' activation caches read in place: a saev directory (metadata.json + acts*.bin), written by saev's own ShardWriter,
read in place through our store protocol: `sae train --data DIR` and `sae analyze` use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

N_IMGS, LAYERS, PATCHES, D = 30, [-2, 6], 4, 8


@pytest.fixture(scope="module")
def saev_dir(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    pytest.importorskip("saev", reason="the peer package saev is not installed (uv sync --all-packages)")
    from saev import activations, config

    root = tmp_path_factory.mktemp("saev")
    imgs = root / "imgs" / "class0"
    imgs.mkdir(parents=True)
    for i in range(N_IMGS):  # saev counts the files of an image folder
        (imgs / f"{i}.png").write_bytes(b"")
    tokens = PATCHES + 1
    cfg = config.Activations(data=config.ImageFolderDataset(root=str(root / "imgs")), dump_to=str(root / "shards"),
                             d_vit=D, vit_layers=LAYERS, n_patches_per_img=PATCHES, cls_token=True,
                             n_patches_per_shard=len(LAYERS) * tokens * 12, device="cpu")  # 12 images a shard: 3 shards
    acts = torch.randn(N_IMGS, len(LAYERS), tokens, D, generator=torch.Generator().manual_seed(0)) * 2 + 1
    writer = activations.ShardWriter(cfg)
    for lo in range(0, N_IMGS, 7):  # as saev's dump loop: batches of images
        writer[lo : min(N_IMGS, lo + 7)] = acts[lo : min(N_IMGS, lo + 7)]
    writer.flush()
    return Path(writer.root), acts


def test_saev_directory_reads_in_place(saev_dir) -> None:
    from sae_core.stores import open_reader

    path, acts = saev_dir
    reader = open_reader(path)  # detected by content: our local store also has a metadata.json
    assert type(reader).__name__ == "SaevReader"
    assert reader.n_examples == N_IMGS and reader.meta.layers == ["-2", "6"] and reader.d_model == D
    assert list(reader.positions("cls")) == [0] and list(reader.positions("patch")) == [1, 2, 3, 4]
    x, index = reader.read_examples(5, 29, layers=[1])  # across the three shards
    np.testing.assert_array_equal(x.numpy(), acts[5:29, [1]].numpy())
    assert (index["example"][:, 0] == np.arange(5, 29)).all() and (index["position"][0] == np.arange(5)).all()
    assert reader.layer_index("6") == 1
    assert not any(path.glob("*.safetensors")) and sorted(p.name for p in path.iterdir())[-1] == "metadata.json"


def test_train_and_analyze_on_a_saev_directory(saev_dir, tmp_path: Path, run_cli,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from sae_core.checkpoint.cfg import read_cfg

    path, _ = saev_dir
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", str(path), "--out", str(out), "--layer", "6", "--tokens", "patch",
                           "--arch", "topk", "--k", "2", "--exp-factor", "2", "--steps", "10", "--batch-size", "32",
                           "--val-fraction", "0", "-q")
    assert code == 0, err
    (ckpt,) = [p for p in out.iterdir() if (p / "cfg.json").is_file()]
    cfg = read_cfg(ckpt)
    assert cfg.source.layer == "6" and cfg.source.tokens == "patch" and cfg.source.adapter == "saev"
    code, _, err = run_cli("analyze", str(out), "-q")
    assert code == 0, err
    assert (ckpt / "feature_stats.json").is_file() and (ckpt / "top_examples.json").is_file()
    _view(out, monkeypatch)


def _view(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The viewer's overview and features pages on a run trained from a foreign cache: no exception."""
    from helpers.viewer import APP
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SAE_VIEWER_RUN", str(run))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    at.sidebar.radio[0].set_value("Features").run()
    assert not at.exception, at.exception


# ---------------------------------------------------------------- SAELens cached activations


@pytest.fixture(scope="module")
def saelens_cache(tmp_path_factory) -> Path:
    """Written by SAELens's own CacheActivationsRunner, on a tiny random HookedTransformer (its
    model loader replaced: no download) and a pre-tokenised in-memory dataset."""
    pytest.importorskip("sae_lens", reason="the peer package sae-lens is not installed")
    datasets = pytest.importorskip("datasets")
    import sae_lens.cache_activations_runner as car
    from sae_lens import CacheActivationsRunnerConfig
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(n_layers=1, d_model=D, n_ctx=8, d_head=4, n_heads=2, d_vocab=50,
                                                      act_fn="relu"))
    out = tmp_path_factory.mktemp("slcache") / "acts"
    mp = pytest.MonkeyPatch()
    mp.setattr(car, "load_model", lambda **kw: model)
    try:
        ds = datasets.Dataset.from_dict({"input_ids": torch.randint(1, 50, (24, 8)).tolist()})
        cfg = CacheActivationsRunnerConfig(
            dataset_path="synthetic", model_name="tiny", model_batch_size=4, hook_name="blocks.0.hook_resid_post",
            d_in=D, training_tokens=24 * 8, context_size=8, new_cached_activations_path=str(out), shuffle=False,
            device="cpu", prepend_bos=False, buffer_size_gb=24 * 8 * D * 4 / 1e9)
        car.CacheActivationsRunner(cfg, override_dataset=ds).run()
    finally:
        mp.undo()
    return out


def test_saelens_cache_reads_in_place_and_trains(saelens_cache: Path, tmp_path: Path, run_cli,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    from sae_core.stores import open_reader

    reader = open_reader(saelens_cache)
    assert type(reader).__name__ == "SAELensCacheReader"
    assert reader.meta.layers == ["blocks.0.hook_resid_post"] and reader.d_model == D and reader.n_examples == 24
    theirs = datasets.load_from_disk(str(saelens_cache)).with_format("numpy")
    x, index = reader.read_examples(3, 20)
    np.testing.assert_array_equal(x[:, 0].numpy(), theirs[3:20]["blocks.0.hook_resid_post"])
    np.testing.assert_array_equal(index["token"], theirs[3:20]["token_ids"])
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", str(saelens_cache), "--out", str(out), "--arch", "topk", "--k", "2",
                           "--exp-factor", "2", "--steps", "5", "--batch-size", "32", "--val-fraction", "0", "-q")
    assert code == 0, err
    code, _, err = run_cli("analyze", str(out), "-q")
    assert code == 0, err
    _view(out, monkeypatch)
