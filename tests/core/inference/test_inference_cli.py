"""``sae features``, ``sae steer`` and ``sae ablate`` through the CLI: real output that matches an
independent computation, JSON, files beside the checkpoint, and one-line errors before any model
loads."""

from __future__ import annotations

import json
from pathlib import Path

import helpers.shared_runs as shared_runs
import numpy as np
import pytest
import torch
from sae_core.analyses.runner import analyse_run
from sae_core.checkpoint import find_checkpoints, load_sae


@pytest.fixture(scope="module")
def lm_ckpt(tmp_path_factory) -> Path:
    return find_checkpoints(shared_runs.lm_run(tmp_path_factory)[1])[0]


def _adapter(ckpt: Path):
    from sae_core.inference import HookedModel

    return HookedModel.from_checkpoint(ckpt)[0].adapter


def _expected_text_features(ckpt: Path, text: str, top: int) -> list[list[list[float]]]:
    """Per read token: the top features of sae.encode(activations caching computes for the text)."""
    from sae_text.adapters.windows import document_windows

    adapter = _adapter(ckpt)
    sae = load_sae(ckpt)
    ids = adapter.tokenizer(text, add_special_tokens=False)["input_ids"]
    wins = list(document_windows(0, ids, adapter.context, adapter.special, None))
    tokens = torch.from_numpy(np.stack([w.tokens for w in wins]))
    valid = torch.from_numpy(np.stack([~w.pad & ~w.special for w in wins]))
    acts = adapter.forward_windows(tokens, (~torch.from_numpy(np.stack([w.pad for w in wins]))).long())[:, 0]
    f = sae.encode(acts[valid])  # (M, d_sae)
    vals, idx = torch.topk(f, top, dim=-1)
    return [[[int(i), float(v)] for v, i in zip(vr, ir, strict=True) if v > 0] for vr, ir in zip(vals.tolist(), idx.tolist(), strict=True)]


def test_features_text_equals_encode(lm_ckpt: Path, run_cli) -> None:
    text = "sparse autoencoders find features in the activations of language models " * 2  # two windows
    code, out, err = run_cli("features", str(lm_ckpt), "--text", text, "--top", "3", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["layer"] == "blocks.0.hook_resid_post" and doc["top"] == 3
    got = [t["features"] for t in doc["tokens"]]
    want = _expected_text_features(lm_ckpt, text, 3)
    n = len(adapter_tokens := _adapter(lm_ckpt).tokenizer(text, add_special_tokens=False)["input_ids"])
    assert len(got) == len(want) == n > 16  # every token of the text once (two windows), no [CLS]/[SEP]
    for g, w in zip(got, want, strict=True):
        assert [i for i, _ in g] == [i for i, _ in w]
        assert np.allclose([v for _, v in g], [v for _, v in w], atol=1e-6)
    assert [t["offset"] for t in doc["tokens"]] == list(range(n)) and doc["tokens"][0]["token"] == "sparse"
    assert [t["token"] for t in doc["tokens"]] == _adapter(lm_ckpt).tokenizer.convert_ids_to_tokens(adapter_tokens)
    code, out, err = run_cli("features", str(lm_ckpt), "--text", text, "--top", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert "top 2 features per token" in lines[0] and lines[1].split()[0] == "sparse" and len(lines) == n + 1


def test_steer_changes_generation_side_by_side(lm_ckpt: Path, run_cli) -> None:
    args = ("steer", str(lm_ckpt), "--prompt", "sparse autoencoders", "--feature", "3", "--max-new-tokens", "6")
    code, out, err = run_cli(*args, "--strength", "40", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["changed"] and doc["clean"] != doc["steered"] and len(doc["clean_token_ids"]) == 6
    code, out2, err = run_cli(*args, "--strength", "40", "--json")
    assert json.loads(out2) == doc  # greedy: deterministic
    code, out, err = run_cli(*args, "--strength", "0")
    assert code == 0, err
    assert [line.split("|")[0].strip() for line in out.splitlines()[1:4]] == ["prompt", "clean", "steered"]
    clean, steered = (line.split("|", 1)[1] for line in out.splitlines()[2:4])
    assert clean == steered and "identical" in out  # strength 0 adds nothing


def test_ablate_reports_ce_change_and_writes_ablation_json(lm_ckpt: Path, run_cli, tmp_path: Path) -> None:
    sae = load_sae(lm_ckpt)
    adapter = _adapter(lm_ckpt)
    from sae_core.stores import open_reader

    reader = open_reader(sae.cfg.source.cache)
    acts, index = reader.read_examples(0, reader.n_examples, layers=[0])
    f = sae.encode(acts[:, 0][torch.from_numpy(index["valid"].astype(bool))])
    order = torch.argsort(f.gt(0).sum(0), descending=True)
    busy = int(order[0])
    dead = int(torch.nonzero(f.amax(0) == 0)[0]) if (f.amax(0) == 0).any() else None  # never fires on the cache
    del adapter
    feats = f"{busy},{dead if dead is not None else int(order[1])}"
    code, out, err = run_cli("ablate", str(lm_ckpt), "--features", feats, "--each", "--split", "tail", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "lm_ce" and [r["features"] for r in doc["results"]] == [[int(x)] for x in feats.split(",")]
    r = doc["results"][0]
    assert r["fired_frac"][0] > 0 and r["ce_delta"] != 0 and r["ce_delta_se"] > 0 and r["ce_delta_exact_se"] > 0
    assert r["kl_ablated_exact"] > 0
    if dead is not None:  # a feature that never fires: ablating it changes nothing, exactly
        d = doc["results"][1]
        assert d["fired_frac"] == [0.0] and d["ce_delta"] == 0 and d["ce_delta_exact"] == 0 and d["kl_ablated_exact"] == 0
    saved = json.loads((lm_ckpt / "ablation.json").read_text())
    assert saved["results"][-len(doc["results"]):] == doc["results"]
    assert r["ce_ablated_exact"] == pytest.approx(_exact_ablation_ce(lm_ckpt, r["rows"], busy), abs=1e-5)
    assert r["split"] == "tail" and r["rows"][1] == open_reader(sae.cfg.source.cache).n_examples
    # the same rows and defaults as the downstream analysis: the clean and spliced CE agree
    down = analyse_run(lm_ckpt, only=["downstream"], options={"split": "tail"}, progress=False)[lm_ckpt.name]["downstream"]
    assert r["rows"] == down["rows"] and r["ce_clean"] == pytest.approx(down["ce_clean"], abs=1e-9)
    assert r["ce_spliced"] == pytest.approx(down["ce_spliced"], abs=1e-9)
    # joint ablation merges into the file, keeping the single-feature results
    code, out, err = run_cli("ablate", str(lm_ckpt), "--features", feats, "--tokens", "50")
    assert code == 0, err
    assert "Δ vs spliced" in out and "written to" in out
    saved = json.loads((lm_ckpt / "ablation.json").read_text())
    ids = [int(x) for x in feats.split(",")]
    assert sorted(tuple(x["features"]) for x in saved["results"]) == sorted([(ids[0],), (ids[1],), tuple(sorted(ids))])
    joint = saved["results"][-1]
    assert 50 <= joint["n_tokens"] < 50 + 16  # the last held-out rows holding >= 50 tokens
    # by default on the SAE's validation examples (cfg.json val), as the analyses
    from sae_core.validation_split import ExampleSplit, Selection

    val = reader.rows(Selection(ExampleSplit(sae.cfg.val.fraction, sae.cfg.val.seed), "val"))
    assert joint["split"] == "val" and joint["n_rows"] <= len(val) and joint["rows"][1] == int(val[-1]) + 1


def _exact_ablation_ce(ckpt: Path, rows: list[int], feature: int) -> float:
    """Mean next-token CE over document targets with x ← x − f_i·W_dec[i] at the SAE's tokens,
    by a plain transformer_lens hook on the cached windows."""
    from sae_core.stores import open_reader

    sae = load_sae(ckpt)
    adapter = _adapter(ckpt)
    _, index = open_reader(sae.cfg.source.cache).read_examples(*rows, layers=[0])
    tokens = torch.from_numpy(index["token"].astype(np.int64))
    valid = torch.from_numpy(index["valid"].astype(bool))

    def hook(act, hook):
        act = act.clone()
        x = act[valid]
        act[valid] = x - sae.encode(x)[:, [feature]] @ sae.W_dec[[feature]]
        return act

    with torch.no_grad():
        logits = adapter.model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_post", hook)],
                                              attention_mask=torch.from_numpy(adapter.attention_from_index(index)).long())
    target = torch.from_numpy(index["position"][:, 1:] >= 0)
    return float(torch.nn.functional.cross_entropy(logits[:, :-1][target], tokens[:, 1:][target]))


def test_encoder_refuses_steering_and_features_minilm(tmp_path_factory, run_cli) -> None:
    """The Done-when check on the bundled MiniLM: `sae features` prints encode() of the model's
    activations for the text; steering an encoder is a one-line error."""
    ckpt = find_checkpoints(shared_runs.minilm_run(tmp_path_factory)[1])[0]
    text = "Sparse autoencoders find features."
    code, out, err = run_cli("features", str(ckpt), "--text", text, "--top", "4", "--json")
    assert code == 0, err
    got = [t["features"] for t in json.loads(out)["tokens"]]
    want = _expected_text_features(ckpt, text, 4)
    assert [[i for i, _ in g] for g in got] == [[i for i, _ in w] for w in want]
    assert np.allclose([v for g in got for _, v in g], [v for w in want for _, v in w], atol=1e-5)
    code, _, err = run_cli("steer", str(ckpt), "--prompt", "hello", "--feature", "1", "--strength", "2")
    last = err.strip().splitlines()[-1]  # (transformers may draw a weight-loading bar first)
    assert code == 1 and last.startswith("error: sentence-transformers/all-MiniLM-L6-v2 is an encoder")


def test_features_image_heatmaps(tmp_path_factory, tmp_path: Path, run_cli) -> None:
    from sae_core.datasets import open_dataset

    runs = shared_runs.vit_runs(tmp_path_factory)
    image = tmp_path / "photo.png"
    open_dataset("samples", "image", n=12)[3].data.save(image)
    timm_ckpt = find_checkpoints(runs["timm"][1])[0]
    code, out, err = run_cli("features", str(timm_ckpt), "--image", str(image), "--top", "3", "--out",
                             str(tmp_path / "maps"), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["tokens"]) == 16 and {t["kind"] for t in doc["tokens"]} == {"patch"}  # a 4x4 grid, patches only
    assert [t["patch"] for t in doc["tokens"]][:5] == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]
    best = [i for i, _ in doc["image_top_features"]]
    assert len(best) == 3 and doc["heatmaps"] == [str(tmp_path / "maps" / f"feature-{i}.png") for i in best]
    from PIL import Image

    assert Image.open(doc["heatmaps"][0]).size == (224, 224)
    peak = max(v for t in doc["tokens"] for i, v in t["features"] if i == best[0])
    assert peak == pytest.approx(doc["image_top_features"][0][1])
    clip_ckpt = find_checkpoints(runs["clip"][1])[0]  # an SAE on cls tokens: no patch heatmaps
    code, out, err = run_cli("features", str(clip_ckpt), "--image", str(image), "--out", str(tmp_path / "c"))
    assert code == 0, err
    assert "no heatmaps: this SAE reads cls tokens" in out and len(out.splitlines()) == 4  # header, cls, summary, note
    code, out, err = run_cli("ablate", str(clip_ckpt), "--features", "0,1", "--json")
    assert code == 0, err
    r = json.loads(out)["results"][0]
    assert r["embedding"] == "final image embedding" and -1 <= r["cos_ablated"] <= 1 + 1e-6 and r["n_rows"] >= 1


def test_errors_before_any_model_loads(lm_ckpt: Path, tmp_path_factory, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import sae_core.inference.loading as loading

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(loading, "adapter_for_cache", no_model)
    ckpt = str(lm_ckpt)
    cases = [
        (("features", ckpt), "pass exactly one of --text"),
        (("features", ckpt, "--text", "a", "--image", "x.png"), "pass exactly one of --text"),
        (("features", ckpt, "--text", "a", "--top", "0"), "--top must be >= 1"),
        (("features", ckpt, "--image", str(lm_ckpt / "cfg.json"), "--out", str(lm_ckpt / "x")), "--image needs an image model"),
        (("steer", ckpt, "--prompt", "a", "--feature", "64", "--strength", "1"), "feature id(s) [64] out of range"),
        (("steer", ckpt, "--prompt", "a", "--feature", "1", "--strength", "nan"), "--strength must be a finite number"),
        (("ablate", ckpt, "--features", "1,x"), "--features expects comma-separated feature ids"),
        (("ablate", ckpt, "--features", "3,99"), "feature id(s) [99] out of range: the SAE has 64 features"),
        (("ablate", ckpt, "--features", "3", "--tokens", "0"), "--tokens must be >= 1"),
        (("ablate", ckpt, "--features", "3", "--split", "test"), "--split must be val, all or tail, got 'test'"),
        (("features", str(lm_ckpt.parent / "nope"), "--text", "a"), "is not an SAE checkpoint"),
    ]
    vit = str(find_checkpoints(shared_runs.vit_runs(tmp_path_factory)["clip"][1])[0])
    cases.append((("steer", vit, "--prompt", "a", "--feature", "1", "--strength", "1"), "sae steer needs a text model"))
    cases.append((("features", vit, "--text", "a"), "--text needs a text model"))
    for args, message in cases:
        code, _, err = run_cli(*args)
        assert code == 1 and message in err and err.count("\n") == 1, (args, err)


START_PROBE = """
import sys, time
t0 = time.perf_counter()
import sae_core.inference.loading as loading
def reached(meta, device="cpu"):
    print("model loading reached", round(time.perf_counter() - t0, 2), "torch imported:", "torch" in sys.modules)
    raise SystemExit(3)
loading.adapter_for_cache = reached
from sae_core.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    print("exit", e.code, "torch imported:", "torch" in sys.modules)
"""


def test_commands_check_everything_before_importing_torch(lm_ckpt: Path, tmp_path: Path) -> None:
    """Refusals come from the JSON files alone and the model is the first thing loaded: `sae steer`
    on an encoder refuses, and `sae features` reaches model loading, without importing torch
    (torch + transformers are most of a model-running command's start-up)."""
    import os
    import shutil
    import subprocess
    import sys

    cfg = json.loads((lm_ckpt / "cfg.json").read_text())
    cache = tmp_path / "encoder-cache"
    shutil.copytree(cfg["source"]["cache"], cache)
    meta = json.loads((cache / "metadata.json").read_text())
    meta["extra"]["causal"] = False  # what the hf adapter records for an encoder (MiniLM, BERT)
    (cache / "metadata.json").write_text(json.dumps(meta))

    env = {**os.environ, "SAE_LOAD_PLUGINS": "text,vision,viewer"}  # the shipped plugins (the example one imports torch)

    def probe(*args: str) -> str:
        res = subprocess.run([sys.executable, "-c", START_PROBE, *args], capture_output=True, text=True, timeout=120,
                             env=env)
        return res.stdout + res.stderr

    out = probe("steer", str(lm_ckpt), "--data", str(cache), "--prompt", "a", "--feature", "1", "--strength", "2")
    assert "is an encoder, not a causal language model" in out and "exit 1 torch imported: False" in out, out
    out = probe("features", str(lm_ckpt), "--text", "hello")
    assert "model loading reached" in out and "torch imported: False" in out, out
    out = probe("ablate", str(lm_ckpt), "--features", "3,99")
    assert "out of range" in out and "exit 1 torch imported: False" in out, out
