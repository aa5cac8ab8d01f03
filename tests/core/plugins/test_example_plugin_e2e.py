"""A third-party plugin, end to end through the CLI only (issue 14, item 3).

The example plugin (tests/example_plugin, the code of docs/plugins.md) caches a toy image model
with its ``patches`` adapter into its ``npz`` store, trains its signed architecture in one sweep
with the built-in ``topk`` (reading through the plugin's ``NpzReader``), analyses the run
(built-in analyses and its own), runs ``sae features --image`` and ``sae ablate`` through the
adapter's ``make_inputs``/``cached_inputs``/``run_with_hooks``, reads the cache from Python,
shows the run in the viewer's data layer and exports it (its ``npz`` format; SAELens refuses the signed SAE and
writes nothing). The numbers are checked against the checkpoint itself: an SAE whose codes may
be negative must report the L0 it fires, not the count of its positive codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

SWEEP = """
[data]
layer = "mix"
tokens = "patch"
batch_size = 64
[train]
steps = 40
log_every = 10
[sae]
arch = ["signed-topk", "topk"]
k = 4
exp_factor = 2
lr = 3e-3
"""
K = 4


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """cache (npz store) -> train (signed-topk + topk, one sweep) -> analyze, all through `sae`."""
    from conftest import cli_runner

    sae = cli_runner()
    root = tmp_path_factory.mktemp("plugin-e2e")
    code, out, err = sae("cache", "--adapter", "patches", "--model", "toy", "--layers", "mix", "--data", "shapes:40",
                         "--store", "npz", "--out", str(root / "caches"), "--shard-examples", "16", "-q")
    assert code == 0, err
    cache = Path(out.strip().splitlines()[-1])
    (root / "sweep.toml").write_text(SWEEP)
    code, _, err = sae("train", "--data", str(cache), "--sweep", str(root / "sweep.toml"), "--out", str(root / "run"),
                       "--val-fraction", "0", "-q")  # analyses read every row: counts below are of all 40
    assert code == 0, err
    for extra in ([], ["--only", "sign-balance"]):
        code, _, err = sae("analyze", str(root / "run"), "-q", *extra)
        assert code == 0, err
    return {"root": root, "cache": cache, "run": root / "run", "signed": root / "run" / "signed-topk-k4",
            "topk": root / "run" / "topk-k4"}


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _codes(ckpt: Path, cache: Path) -> torch.Tensor:
    """Codes of every patch token of the cache, computed here from the checkpoint: (tokens, d_sae)."""
    from sae_core import load_sae, open_reader

    reader = open_reader(cache)
    acts, _ = reader.read_examples(0, reader.n_examples)  # (n, 1, 16, d)
    with torch.no_grad():
        return load_sae(ckpt).encode(acts[:, 0].reshape(-1, acts.shape[-1]))


def test_cache_lives_in_the_plugin_store(made, run_cli) -> None:
    cache = made["cache"]
    assert (cache / "npz-cache.json").is_file() and not (cache / "metadata.json").exists()
    meta = _read(cache / "npz-cache.json")["meta"]
    assert meta["complete"] and meta["n_examples"] == 40 and meta["adapter"] == "patches"
    assert meta["extra"]["grid"] == [4, 4] and meta["extra"]["preprocess"]["resize_shorter"] == 32
    code, out, err = run_cli("info", "--verify", str(cache))  # through the plugin's reader and the defaults
    assert code == 0, err
    doc = json.loads(out)
    assert doc["store"] == "npz" and doc["examples_written"] == 40 and doc["verified"]["nonfinite"] == {}


def test_signed_architecture_is_measured_by_what_it_fires(made) -> None:
    """L0 is k in training metrics, feature-stats and reconstruction, and equals the non-zero
    count of the checkpoint's own codes; about half of the firings are negative."""
    signed, cache = made["signed"], made["cache"]
    cfg = _read(signed / "cfg.json")
    assert cfg["architecture"] == "signed-topk" and cfg["non_negative_codes"] is False
    codes = _codes(signed, cache)
    assert (codes < 0).float().mean() > 0  # really signed
    assert float((codes != 0).sum(-1).float().mean()) == K
    stats = _read(signed / "feature_stats.json")
    assert stats["mean_l0"] == pytest.approx(K) and stats["n_tokens"] == 40 * 16
    assert stats["non_negative_codes"] is False
    fired = (codes != 0).float().mean(0)  # (d_sae,): the reference frequency of each latent
    from safetensors.torch import load_file

    table = load_file(str(signed / "feature_stats.safetensors"))
    torch.testing.assert_close(table["frequency"], fired)
    assert stats["dead_frac"] == pytest.approx(float((fired == 0).float().mean()))
    torch.testing.assert_close(table["max_activation"], codes.abs().amax(0))
    top = load_file(str(signed / "top_examples.safetensors"))  # ranked by |code|: the best is the max
    torch.testing.assert_close(top["values"][:, 0], codes.abs().amax(0))
    assert _read(signed / "reconstruction.json")["l0"] == pytest.approx(K)
    assert cfg["metrics"]["l0"] == pytest.approx(K)
    balance = _read(signed / "sign_balance.json")
    assert 0.2 < balance["negative_fraction"] < 0.8
    down = _read(signed / "downstream.json")  # the plugin adapter's splice_eval, re-created from the cache
    assert down["kind"] == "embedding_cosine" and down["cache_rel_error"] < 1e-5 and down["embedding_cosine"] > 0.9


def test_builtin_topk_trained_in_the_same_sweep(made) -> None:
    topk = made["topk"]
    cfg = _read(topk / "cfg.json")
    assert cfg["non_negative_codes"] is True and cfg["train"]["steps"] == 40
    codes = _codes(topk, made["cache"])
    assert (codes >= 0).all()
    assert _read(topk / "feature_stats.json")["mean_l0"] == pytest.approx(float((codes != 0).sum(-1).float().mean()))
    sweep = _read(made["run"] / "sweep.json")
    assert {s["architecture"] for s in sweep["saes"]} == {"signed-topk", "topk"}


def test_the_plugin_reader_from_python(made) -> None:
    """What docs/plugins.md section 10 shows: the cache through the plugin's reader and the defaults."""
    from sae_core import INDEX_DTYPE, open_reader

    reader = open_reader(made["cache"])
    assert type(reader).__name__ == "NpzReader" and reader.meta.adapter == "patches" and reader.meta.layers == ["mix"]
    assert reader.n_examples == 40 and reader.n_tokens() == 40 * 16
    acts, index = reader.read_examples(0, 8)
    assert acts.shape == (8, 1, 16, reader.meta.d_model) and acts.dtype == torch.float32
    assert index.dtype == INDEX_DTYPE and index.shape == (8, 16) and index["valid"].all()
    assert (index["example"][:, 0] == np.arange(8)).all()


def test_sae_features_and_ablate_run_the_plugin_adapter(made, run_cli) -> None:
    """`sae features --image` hands the adapter a PIL image (make_inputs) and records the SAE's
    codes on the 16 patches; `sae ablate` runs cache rows (cached_inputs). The codes equal the
    checkpoint's own encode of the cached activations of the same image."""
    from sae_core import load_sae, open_reader
    from sae_example_plugin.shapes import ShapesDataset

    root, signed = made["root"], made["signed"]
    image = root / "shape3.png"
    ShapesDataset("4")[3].data.save(image)
    code, out, err = run_cli("features", str(signed), "--image", str(image), "--top", "3", "--out", str(root / "maps"),
                             "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["tokens"]) == 16 and [t["patch"] for t in doc["tokens"]][:5] == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]
    assert len(doc["heatmaps"]) == 3 and all(Path(p).is_file() for p in doc["heatmaps"])
    reader = open_reader(made["cache"])
    acts, _ = reader.read_examples(3, 4)  # example 3 of shapes:40 is the same image (seeded by index)
    with torch.no_grad():
        want = load_sae(signed).encode(acts[0, 0])  # (16, d_sae)
    got = {(t["patch"][0] * 4 + t["patch"][1], i): v for t in doc["tokens"] for i, v in t["features"]}
    for (p, i), v in got.items():
        assert v == pytest.approx(float(want[p, i]), abs=1e-4)
    code, out, err = run_cli("ablate", str(made["topk"]), "--features", "0,1", "--json")
    assert code == 0, err
    r = json.loads(out)["results"][0]
    assert r["embedding"] == "mean patch embedding" and -1 <= r["cos_ablated"] <= 1 + 1e-6 and r["n_rows"] >= 1


def test_viewer_loads_the_run_with_signed_heatmaps(made) -> None:
    from sae_viewer import data

    saes = data.find_saes(made["run"])
    rows = {r["name"]: r for r in data.sweep_rows(saes)}
    assert set(rows) == {"signed-topk-k4", "topk-k4"} and rows["signed-topk-k4"]["l0"] == pytest.approx(K)
    signed = next(s for s in saes if s.name == "signed-topk-k4")
    feats = data.feature_table(signed)
    latent = int(np.argmax(feats["frequency"]))
    top = data.top_examples(signed, latent)
    assert data.signed(top["meta"]) and top["meta"]["modality"] == "image"
    assert len(top["values"]) and (top["values"] > 0).all()  # ranked by |code|
    i = int(np.argmax((top["token_acts"] < 0).any(-1)))  # an example where the latent fires negatively
    acts = top["token_acts"][i].astype(np.float32)
    assert (acts < 0).any()
    image = data.open_image(top["meta"], int(top["examples"][i]))  # through the plugin's dataset
    assert image.size == (48, 40)
    extra = top["meta"]["extra"]
    overlay = np.asarray(data.heatmap_overlay(image, acts, extra)).astype(int)  # (224, 224, 3)
    plain = np.asarray(data.heatmap_overlay(image, np.zeros_like(acts), extra)).astype(int)  # the crop alone
    assert overlay.shape == plain.shape == (224, 224, 3)
    cell = 224 // 4  # the 4x4 patch grid of ImageGeometry
    for patch, colour in ((int(np.argmin(acts)), 2), (int(np.argmax(acts)), 0)):  # most negative: blue; positive: red
        if (acts[patch] < 0) == (colour == 2) and acts[patch] != 0:
            r, c = divmod(patch, 4)
            shift = (overlay - plain)[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell].mean((0, 1))  # (3,)
            assert shift[colour] > 5 and shift[2 - colour] < 0, (patch, shift)


def test_export_checks_every_sae_before_writing(made, run_cli) -> None:
    root, run = made["root"], made["run"]
    code, _, err = run_cli("export", str(run), "--format", "saelens", "--out", str(root / "sl"))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "signed-topk-k4" in err and "no SAELens equivalent" in err and "nothing was written" in err
    assert not (root / "sl").exists() and not list(root.glob(".sl.*"))  # no partial output, no staging left
    code, _, err = run_cli("export", str(made["topk"]), "--format", "saelens", "--out", str(root / "sl-topk"))
    assert code == 0, err
    assert (root / "sl-topk" / "sae_weights.safetensors").is_file()
    code, _, err = run_cli("export", str(run), "--format", "npz", "--out", str(root / "np"))
    assert code == 0, err
    w = np.load(root / "np" / "signed-topk-k4" / "sae.npz")
    x = np.random.default_rng(0).normal(size=(8, w["W_enc"].shape[0])).astype(np.float32)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]  # the architecture's equations, in numpy
    top = np.argsort(-np.abs(pre), axis=-1)[:, :K]
    ref = np.zeros_like(pre)
    np.put_along_axis(ref, top, np.take_along_axis(pre, top, -1), -1)
    from sae_core import load_sae

    with torch.no_grad():
        ours = load_sae(made["signed"]).encode(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    assert _read(root / "np" / "topk-k4" / "sae.json")["architecture"] == "topk"


def test_plugins_all_shows_every_kind(run_cli) -> None:
    code, out, _ = run_cli("plugins", "--all")
    assert code == 0
    example = next(p for p in json.loads(out)["plugins"] if p["name"] == "example")
    assert example["components"] == {
        "adapter": ["mlp", "patches"], "store": ["npz"], "architecture": ["signed-topk"],
        "analysis": ["decoder-norms", "sign-balance"], "dataset": ["image/shapes", "vector/gaussian"],
        "exporter": ["npz"], "command": ["example-hello"],
    }
    code, out, _ = run_cli("train", "--help")
    assert code == 0 and "signed-topk" in out and "matryoshka" in out
    code, out, _ = run_cli("export", "--help")
    assert code == 0 and "npz" in out
