"""Probing (`sae probe`, the `probe` analysis) on caches with a planted label → latent relation,
checked against scikit-learn (AP, L1 logistic regression) and a brute-force F1 sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_core.checkpoint import load_sae, save_sae
from sae_core.protocols import ActivationBatch, CacheMetadata
from sae_core.stores import open_reader, open_writer
from safetensors.torch import load_file

D, D_SAE, T, PLANTED = 8, 12, 4, 5


def _sae(root: Path) -> Path:
    """A ReLU SAE whose latent PLANTED reads direction u (bias −1.5: silent on noise) and whose other
    latents read random directions orthogonal to u."""
    g = torch.Generator().manual_seed(1)
    u = torch.zeros(D)
    u[0] = 1.0
    w = torch.randn(D, D_SAE, generator=g)
    w[0] = 0  # orthogonal to u
    w = w / w.norm(dim=0)
    w[:, PLANTED] = u
    b = torch.zeros(D_SAE)
    b[PLANTED] = -1.5
    tensors = {"W_enc": w, "b_enc": b, "W_dec": w.T.contiguous(), "b_dec": torch.zeros(D)}
    cfg = {"name": "planted", "architecture": "relu", "d_in": D, "d_sae": D_SAE, "hyper": {},
           "normalization": {"folded": True, "scale": 1.0}, "source": {"layer": "l0", "tokens": "all"}}
    return save_sae(root / "planted", tensors, cfg)


def _cache(root: Path, n: int, positive, *, dataset: dict | None = None, token_ids=None, ids=None) -> Path:
    """n examples of T tokens of noise; token ``positive(row)`` (a position, or None) gets +4u."""
    meta = CacheMetadata(adapter="t", model="m", layers=["l0"], d_model=D, dtype="float32", tokens_per_example=T,
                         token_kinds=["token"] * T, dataset=dataset or {"spec": "synthetic"})
    g = torch.Generator().manual_seed(2)
    acts = torch.randn(n, 1, T, D, generator=g) * 0.5
    for r in range(n):
        p = positive(r)
        if p is not None:
            acts[r, 0, p, 0] += 4.0
    w = open_writer(root, meta, shard_examples=1000)
    ex = np.arange(n) if ids is None else ids
    w.write(ActivationBatch(acts=acts, example_ids=ex, token_ids=token_ids))
    return w.close()


def _dense_scores(cache: Path, ckpt: Path) -> tuple[torch.Tensor, np.ndarray]:
    """Brute force: codes (n, T, d_sae) of every row with one plain encode."""
    reader = open_reader(cache)
    acts, index = reader.read_examples(0, reader.n_examples, layers=[0])
    with torch.no_grad():
        return load_sae(ckpt).encode(acts[:, 0]), index


def _check_against_sklearn(scores: torch.Tensor, y: np.ndarray, tensors: dict, j: int) -> None:
    from sklearn.metrics import average_precision_score

    for k in range(D_SAE):
        s = scores[:, k].numpy()
        assert tensors["ap"][j, k].item() == pytest.approx(average_precision_score(y, s), abs=1e-5)
        best, thr = -1.0, None
        for t in np.unique(np.concatenate([s, [0.0]])):  # every threshold, ties to the highest
            pred = s >= t
            f = 2 * (pred & y).sum() / (pred.sum() + y.sum())
            if f >= best:
                best, thr = f, t
        assert tensors["f1"][j, k].item() == pytest.approx(best, abs=1e-5)
        assert tensors["threshold"][j, k].item() == pytest.approx(thr, abs=1e-5)


def test_example_labels_from_csv_rank_the_planted_latent_first(run_cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 240
    label = rng.random(n) < 0.3
    spot = rng.integers(0, T, n)
    ids = np.arange(n) * 3 + 7  # dataset ids are not row numbers
    cache = _cache(tmp_path / "c", n, lambda r: int(spot[r]) if label[r] else None, ids=ids)
    ckpt = _sae(tmp_path)
    csv = tmp_path / "labels.csv"
    lines = ["example,label"] + [f"{ids[r]},{'planted' if label[r] else 'other'}" for r in range(n) if r % 10]
    csv.write_text("\n".join(lines) + "\n")
    code, out, err = run_cli("probe", str(ckpt), "--data", str(cache), "--labels", str(csv), "-q")
    assert code == 0, err
    doc = json.loads((ckpt / "probe.json").read_text())
    assert doc["labels"] == ["other", "planted"] and doc["level"] == "example"
    assert doc["n_items"] == doc["n_rows"] == len(lines) - 1 and doc["source"]["kind"] == "csv"  # only labelled rows read
    top = doc["per_label"]["planted"]["top_latents"][0]
    assert top["latent"] == PLANTED and top["ap"] > 0.999 and top["f1"] > 0.999
    probe = doc["per_label"]["planted"]["probe"]
    assert probe["test_ap"] > 0.99 and probe["top_weights"][0]["latent"] == PLANTED
    assert doc["probe"]["test_top1_accuracy"] > 0.95 and doc["probe"]["n_test"] > 0
    tensors = load_file(str(ckpt / "probe.safetensors"))
    assert tensors["ap"].shape == tensors["probe_weight"].shape == (2, D_SAE) and tensors["probe_bias"].shape == (2,)
    codes, _ = _dense_scores(cache, ckpt)
    listed = np.array([r % 10 != 0 for r in range(n)])
    scores = codes.abs().amax(1)[listed]  # (m, d_sae) example level: max over tokens
    _check_against_sklearn(scores, label[listed], tensors, 1)
    _check_against_sklearn(scores, ~label[listed], tensors, 0)
    assert json.loads(out)["planted"]["probe"]["best_latent"]["planted"]["latent"] == PLANTED


def test_token_labels_by_regex_and_by_jsonl_positions(run_cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 160
    tok = rng.integers(0, 10, (n, T)).astype(np.int32)  # vocab: 0-4 "num…", 5-9 "word…"
    cache = _cache(tmp_path / "c", n, lambda r: None, token_ids=tok)
    # plant u on every "num" token: rebuild with the planted activations
    meta = open_reader(cache).meta
    acts, _ = open_reader(cache).read_examples(0, n, layers=[0])
    acts = acts.clone()
    acts[..., 0] += torch.from_numpy(tok < 5).float()[:, None] * 4.0
    cache2 = tmp_path / "c2"
    w = open_writer(cache2, meta, shard_examples=1000)
    w.write(ActivationBatch(acts=acts, example_ids=np.arange(n), token_ids=tok))
    cache2 = w.close()
    (cache2 / "vocab.json").write_text(json.dumps([f"num{i}" for i in range(5)] + [f"word{i}" for i in range(5)]))
    ckpt = _sae(tmp_path)
    code, _, err = run_cli("analyze", str(ckpt), "--data", str(cache2), "--only", "probe", "--option", "labels=regex:^num",
                           "-q")
    assert code == 0, err
    doc = json.loads((ckpt / "probe.json").read_text())
    assert doc["level"] == "token" and doc["labels"] == ["^num"] and doc["n_items"] == n * T
    assert doc["per_label"]["^num"]["top_latents"][0]["latent"] == PLANTED
    assert doc["per_label"]["^num"]["top_latents"][0]["ap"] > 0.999
    tensors = load_file(str(ckpt / "probe.safetensors"))
    codes, _ = _dense_scores(cache2, ckpt)
    _check_against_sklearn(codes.abs().reshape(n * T, D_SAE), (tok < 5).reshape(-1), tensors, 0)
    # the same labels as positions in a JSONL file, for half of the examples
    jl = tmp_path / "tokens.jsonl"
    jl.write_text("\n".join(json.dumps({"example": r, "tokens": {"num": [int(p) for p in np.flatnonzero(tok[r] < 5)]}})
                            for r in range(0, n, 2)))
    code, _, err = run_cli("probe", str(ckpt), "--data", str(cache2), "--labels", str(jl), "-q")
    assert code == 0, err
    doc = json.loads((ckpt / "probe.json").read_text())
    assert doc["n_rows"] == n // 2 and doc["n_items"] == (n // 2) * T and doc["per_label"]["num"]["top_latents"][0]["latent"] == PLANTED
    tensors = load_file(str(ckpt / "probe.safetensors"))
    _check_against_sklearn(codes[::2].abs().reshape(-1, D_SAE), (tok[::2] < 5).reshape(-1), tensors, 0)


def test_image_folder_classes_are_labels(run_cli, tmp_path: Path) -> None:
    from PIL import Image

    pytest.importorskip("sae_vision")
    root = tmp_path / "imgs"
    for cls, count in (("cat", 30), ("dog", 50)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(root / cls / f"{i:02d}.png")
    files = sorted(p for p in root.rglob("*.png"))  # the dataset's order: example id = index
    cat = np.array([p.parent.name == "cat" for p in files])
    cache = _cache(tmp_path / "c", len(files), lambda r: 1 if cat[r] else None,
                   dataset={"spec": f"folder:{root}", "modality": "image"})
    ckpt = _sae(tmp_path)
    code, _, err = run_cli("probe", str(ckpt), "--data", str(cache), "--labels", "dataset", "-q")
    assert code == 0, err
    doc = json.loads((ckpt / "probe.json").read_text())
    assert doc["labels"] == ["cat", "dog"] and doc["source"] == {"kind": "dataset", "spec": f"folder:{root}"}
    assert doc["per_label"]["cat"]["top_latents"][0] == {"latent": PLANTED, "ap": 1.0, "f1": 1.0,
                                                          "threshold": pytest.approx(2.5, abs=1.5)}


def test_l1_probe_matches_sklearn() -> None:
    from sae_core.probing.linear import fit_l1_logistic
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    n, d, lam = 300, 20, 0.02
    x = torch.randn(n, d, generator=g).relu()
    y = (torch.rand(n, generator=g) < torch.sigmoid(2 * x[:, 0] - 1.5 * x[:, 3] + 0.3)).double()
    w, b, _ = fit_l1_logistic(x.to_sparse(), y[:, None], lam, max_iter=20000, tol=1e-10)
    ref = LogisticRegression(C=1 / (n * lam), l1_ratio=1.0, solver="saga", tol=1e-10, max_iter=100000).fit(x.double().numpy(), y.numpy())
    np.testing.assert_allclose(w[0].numpy(), ref.coef_[0], atol=2e-4)
    assert float(b[0]) == pytest.approx(float(ref.intercept_[0]), abs=2e-4)
    assert ((w[0] == 0).numpy() == (np.abs(ref.coef_[0]) < 1e-6)).all()  # the same weights are exactly zero


def test_bad_labels_are_one_line_errors(run_cli, tmp_path: Path) -> None:
    cache = _cache(tmp_path / "c", 20, lambda r: None)
    ckpt = _sae(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\na,b\n")
    for labels, msg in ((str(tmp_path / "nope.csv"), "does not exist"), (str(bad), "no 'example' column"),
                        ("regex:^a", "vocab.json"), ("dataset", "cannot open the cache's dataset synthetic")):
        code, _, err = run_cli("probe", str(ckpt), "--data", str(cache), "--labels", labels, "-q")
        assert code != 0 and msg in err and "Traceback" not in err, (labels, err)
    code, _, err = run_cli("analyze", str(ckpt), "--data", str(cache), "--only", "probe", "-q")
    assert code != 0 and "needs labels" in err
    code, _, err = run_cli("analyze", str(ckpt), "--data", str(cache), "--option", "split=all", "-q")
    assert code == 0, err
    assert (ckpt / "feature_stats.json").is_file() and not (ckpt / "probe.json").exists()  # off by default


def test_an_example_over_several_rows_scores_its_maximum(run_cli, tmp_path: Path) -> None:
    """Text documents span several windows (rows with one example id): the example's score is
    its maximum over all of its rows; JSONL example labels, several per example."""
    rng = np.random.default_rng(3)
    n = 200
    ids = np.arange(n) // 2  # two rows per example
    planted = rng.random(n // 2) < 0.4
    which = rng.integers(0, 2, n // 2)  # the row of the example that carries the direction
    cache = _cache(tmp_path / "c", n, lambda r: 2 if planted[r // 2] and r % 2 == which[r // 2] else None, ids=ids)
    ckpt = _sae(tmp_path)
    jl = tmp_path / "labels.jsonl"
    jl.write_text("\n".join(json.dumps({"example": int(e), "labels": ["planted", "any"] if planted[e] else ["any"]})
                            for e in range(n // 2)))
    code, _, err = run_cli("probe", str(ckpt), "--data", str(cache), "--labels", str(jl), "-q")
    assert code == 0, err
    doc = json.loads((ckpt / "probe.json").read_text())
    assert doc["n_items"] == doc["n_examples"] == n // 2 and doc["n_rows"] == n
    assert doc["skipped_labels"] == {"any": "every item is positive"}
    assert doc["per_label"]["planted"]["top_latents"][0]["latent"] == PLANTED
    codes, _ = _dense_scores(cache, ckpt)
    per_row = codes.abs().amax(1)  # (n, d_sae)
    scores = torch.maximum(per_row[0::2], per_row[1::2])  # (n/2, d_sae): max over the example's rows
    tensors = load_file(str(ckpt / "probe.safetensors"))
    assert doc["labels"] == ["any", "planted"] and torch.isnan(tensors["ap"][0]).all()
    _check_against_sklearn(scores, planted, tensors, 1)


def test_label_file_formats(tmp_path: Path) -> None:
    from sae_core import load_labels

    meta = CacheMetadata(adapter="t", model="m", layers=["l0"], d_model=D, dtype="float32", tokens_per_example=T,
                         token_kinds=["token"] * T, dataset={"spec": "synthetic"})
    multi = tmp_path / "multi.csv"
    multi.write_text("example,labels\n3,cat|furry\n1,dog\n1,furry\n2,\n")
    lab = load_labels(str(multi), meta, tmp_path)
    assert lab.names == ["cat", "dog", "furry"] and lab.examples.tolist() == [1, 2, 3]
    assert lab.y.tolist() == [[False, True, True], [False, False, False], [True, False, True]]
    wide = tmp_path / "wide.csv"
    wide.write_text("id,red,big\n5,1,0\n4,0,1\n")
    lab = load_labels(str(wide), meta, tmp_path)
    assert lab.names == ["red", "big"] and lab.y.tolist() == [[False, True], [True, False]]
    jl = tmp_path / "ex.jsonl"
    jl.write_text('{"example": 9, "label": "a"}\n\n{"example": 2, "labels": []}\n')
    lab = load_labels(str(jl), meta, tmp_path)
    assert lab.names == ["a"] and lab.examples.tolist() == [2, 9] and lab.y[:, 0].tolist() == [False, True]
    tok = tmp_path / "tok.jsonl"
    tok.write_text('{"example": 4, "tokens": {"x": [1, 3], "y": [0]}}\n{"example": 6, "tokens": {}}\n')
    lab = load_labels(str(tok), meta, tmp_path)
    assert lab.level == "token" and lab.names == ["x", "y"] and lab.examples.tolist() == [4, 6]
    from sae_core.protocols import INDEX_DTYPE

    index = np.zeros((2, T), dtype=INDEX_DTYPE)
    index["example"] = [[4], [6]]
    index["position"] = np.arange(T)
    y = lab.labels_of(index)  # (2, T, 2)
    assert y[0, :, 0].tolist() == [False, True, False, True] and y[0, :, 1].tolist() == [True, False, False, False]
    assert not y[1].any()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"example": "x7", "label": "a"}\n')
    from sae_core import SAEError

    with pytest.raises(SAEError, match="is not an integer"):
        load_labels(str(bad), meta, tmp_path)
