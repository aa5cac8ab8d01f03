"""Live training: SAEs trained on a running model (no cache) through the LiveSource.

The central promise (issue 16's "done when"): a live run with ``--also-cache`` followed by a
cached run on that cache with ``--mixing buffer`` and the same seed gives the same SAEs, bit for
bit on CPU — for a row-wise model (the example plugin's ``mlp``), a tiny random text model
(``tlens``, ``hf``) and a tiny random ViT (``timm``). Also: exact resume, the cache an
interrupted live run leaves (and finishes), the reader protocol's buffer plan, one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.live import TINY_TLENS, assert_same_saes
from sae_core.stores import open_reader

MLP = ("--adapter", "mlp", "--model", "rand-mlp", "--layers", "0,-1", "--data", "gaussian:300",
       "--model-batch-size", "16")
STEPS = ("--batch-size", "32", "--steps", "40", "--log-every", "10")
TRAIN = (*STEPS, "--d-sae", "64", "--k", "4", "-q")






def _out(stdout: str) -> Path:
    return Path(stdout.strip().splitlines()[-1])


def test_live_then_cached_gives_the_same_saes_mlp(run_cli, tmp_path: Path) -> None:
    """Two layers, a sweep of two k (one bank), 2% validation split, several windows and epochs."""
    code, out, err = run_cli("train", *MLP, "--out", str(tmp_path / "live"), "--buffer-tokens", "50",
                             "--also-cache", str(tmp_path / "caches"), "--layer", "1", "--hyper", "aux_k=8",
                             *STEPS, "--sweep", str(_sweep(tmp_path)))
    assert code == 0, err
    assert "tokens/s" in err  # the model's throughput (progress is on: no -q)
    caches = list((tmp_path / "caches").iterdir())
    assert len(caches) == 1
    cache = caches[0]
    reader = open_reader(cache)
    assert reader.meta.complete and reader.n_examples == 300 and reader.meta.layers == ["hidden.0", "hidden.2"]
    # the cache is the one `sae cache` writes for the same arguments (same address; the same rows up
    # to the float rounding of batched forwards, whose batches hold other examples)
    code, out, err = run_cli("cache", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0,-1",
                             "--data", "gaussian:300", "--out", str(tmp_path / "plain"), "-q")
    assert code == 0, err
    assert _out(out).name == cache.name
    torch.testing.assert_close(open_reader(_out(out)).read_examples(0, 300)[0], reader.read_examples(0, 300)[0],
                               rtol=1e-5, atol=1e-6)
    run_cfg = json.loads((tmp_path / "live" / "config.json").read_text())
    assert run_cfg["live"]["adapter"] == "mlp" and run_cfg["cache_fingerprint"] == cache.name
    assert run_cfg["saes"][0]["data"]["mixing"] == "buffer" and run_cfg["saes"][0]["data"]["buffer_examples"] == 50
    cfg = json.loads((tmp_path / "live" / "topk-k4" / "cfg.json").read_text())
    assert cfg["source"]["cache"] == str(cache.resolve()) and cfg["source"]["layer"] == "hidden.2"
    code, out, err = run_cli("train", "--data", str(cache), "--mixing", "buffer", "--buffer-tokens", "50",
                             "--out", str(tmp_path / "cached"), "--layer", "1", "--hyper", "aux_k=8", *STEPS,
                             "-q", "--sweep", str(_sweep(tmp_path)))
    assert code == 0, err
    assert_same_saes(tmp_path / "live", tmp_path / "cached")
    # the run reads like a cached one: analyses on the cache it wrote
    code, out, err = run_cli("analyze", str(tmp_path / "live"), "--only", "feature-stats")
    assert code == 0, err
    assert (tmp_path / "live" / "topk-k4" / "feature_stats.json").is_file()


def _sweep(tmp_path: Path) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text('[sae]\narch = "topk"\nk = [4, 6]\nd_sae = 64\n')
    return path


def test_live_without_cache_equals_live_with_cache(run_cli, tmp_path: Path) -> None:
    """--also-cache changes nothing in training; without it checkpoints record no cache."""
    code, _, err = run_cli("train", *MLP, "--out", str(tmp_path / "a"), "--buffer-tokens", "64", *TRAIN)
    assert code == 0, err
    code, _, err = run_cli("train", *MLP, "--out", str(tmp_path / "b"), "--buffer-tokens", "64",
                           "--also-cache", str(tmp_path / "c"), *TRAIN)
    assert code == 0, err
    assert_same_saes(tmp_path / "a", tmp_path / "b")
    cfg = json.loads((tmp_path / "a" / "topk-k4" / "cfg.json").read_text())
    assert cfg["source"]["cache"] is None and cfg["source"]["adapter"] == "mlp"
    code, _, err = run_cli("analyze", str(tmp_path / "a"), "-q")
    assert code == 1 and "--data" in err and len(err.strip().splitlines()) == 1


def _live_config(out: Path, also_cache: Path | None = None, n: int = 300, live_options: dict | None = None, **train):
    from sae_core.train import expand
    from sae_core.train.live import LiveConfig

    live = LiveConfig(adapter="mlp", model="rand-mlp", layers=["0", "-1"], data=f"gaussian:{n}", model_batch_size=16,
                      also_cache=str(also_cache) if also_cache else None, **(live_options or {}))
    return expand("", 32, {"batch_size": 32, "mixing": "buffer", "buffer_examples": 40, "layer": 1},
                  {"arch": ["topk", "jumprelu"], "k": 4, "d_sae": 64},
                  {"steps": 40, "checkpoint_every": 7, "log_every": 5, **train}, str(out), live=live)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_live_resume_is_exact(tmp_path: Path, dtype: str) -> None:
    """Stopped mid-window (state saved), resumed in a new source: the same SAEs and metrics as an
    uninterrupted run — the window is recomputed and the carried samples come from the state
    (kept in the storage dtype: bf16 for a bf16 run)."""
    from sae_core.train import TrainConfig, run_training

    straight = run_training(_live_config(tmp_path / "a", live_options={"dtype": dtype}), progress=False)
    run_training(_live_config(tmp_path / "b", live_options={"dtype": dtype}), progress=False, stop_after=13)
    state = json.loads((tmp_path / "b" / "state" / "group-0" / "state.json").read_text())
    assert state["step"] == 13 and state["stream"]["window"] > 0 and state["stream"]["batch_start"] > 0
    cfg = TrainConfig.from_json(json.loads((tmp_path / "b" / "config.json").read_text()))
    assert cfg.live is not None and cfg.live.adapter == "mlp"
    resumed = run_training(cfg, progress=False, resume=True)
    assert_same_saes(straight, resumed)


def test_interrupted_live_cache_is_finished_by_the_resumed_run(tmp_path: Path) -> None:
    """The cache of a live run stopped in its first epoch is incomplete but durable; the resumed run
    recomputes what the cache lost (here: its last shard, as a kill before the commit would) and
    finishes it: the same rows as an uninterrupted run's cache, and the same SAEs."""
    from sae_core.train import TrainConfig, run_training

    straight = run_training(_live_config(tmp_path / "a", tmp_path / "ca", n=1000), progress=False)
    run_training(_live_config(tmp_path / "b", tmp_path / "cb", n=1000), progress=False, stop_after=3)
    cache_b = next((tmp_path / "cb").iterdir())
    assert json.loads((tmp_path / "b" / "state" / "group-0" / "state.json").read_text())["stream"]["window"] >= 2
    meta = json.loads((cache_b / "metadata.json").read_text())
    shards = json.loads((cache_b / "shards.json").read_text())
    assert not meta["complete"] and shards["shards"]
    last = shards["shards"][-1]["last_example"]
    assert 0 < last < 999
    shards["shards"] = shards["shards"][:-1]  # the last shard never got committed
    (cache_b / "shards.json").write_text(json.dumps(shards))
    cfg = TrainConfig.from_json(json.loads((tmp_path / "b" / "config.json").read_text()))
    resumed = run_training(cfg, progress=False, resume=True)
    assert_same_saes(straight, resumed)
    ra, rb = open_reader(next((tmp_path / "ca").iterdir())), open_reader(cache_b)
    assert rb.meta.complete and ra.n_examples == rb.n_examples == 1000
    xa, ia = ra.read_examples(0, 1000)
    xb, ib = rb.read_examples(0, 1000)
    assert torch.equal(xa, xb) and np.array_equal(ia, ib)


HF_DOCS = ["Sparse autoencoders decompose activations into interpretable features.",
        "The quick brown fox jumps over the lazy dog. " * 6, "Short one.",
        "Residual streams carry information between transformer blocks, layer after layer."]


@pytest.fixture(scope="module")
def text_setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("text")
    (root / "tiny.json").write_text(json.dumps(TINY_TLENS))
    (root / "docs.txt").write_text("\n\n".join(HF_DOCS * 8))
    return root / "tiny.json", root / "docs.txt"


@pytest.mark.parametrize("adapter", ["tlens", "hf"])
def test_live_text_then_cached_gives_the_same_saes(run_cli, tmp_path: Path, text_setup, adapter: str,
                                                   tiny_gpt2_dir: Path) -> None:
    """Documents spanning several windows (rows), padding and special tokens, a window of 6
    documents: live + --also-cache, then the cache with --mixing buffer."""
    from sae_text.minilm import minilm_dir

    cfg, corpus = text_setup
    model = (("--model", f"config:{cfg}", "--opt", f"tokenizer={minilm_dir()}") if adapter == "tlens"
             else ("--model", str(tiny_gpt2_dir)))
    live = ("--adapter", adapter, *model, "--layers", "0", "--data", f"text:{corpus}", "--context-size", "16",
            "--model-batch-size", "3")
    train = ("--batch-size", "32", "--steps", "30", "--d-sae", "64", "--k", "4", "--log-every", "10",
             "--buffer-tokens", "96", "-q")
    code, _, err = run_cli("train", *live, "--out", str(tmp_path / "live"), "--also-cache", str(tmp_path / "c"), *train)
    assert code == 0, err
    cache = next((tmp_path / "c").iterdir())
    reader = open_reader(cache)
    assert reader.meta.complete and reader.meta.adapter == adapter
    assert (cache / "vocab.json").is_file()  # write_extras, as `sae cache` does
    code, _, err = run_cli("train", "--data", str(cache), "--mixing", "buffer", "--out", str(tmp_path / "cached"), *train)
    assert code == 0, err
    assert_same_saes(tmp_path / "live", tmp_path / "cached")


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    from helpers.text_hf import gpt2_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    tok = gpt2_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=3, n_head=4, n_positions=64,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("adapter", ["timm", "clip"])
def test_live_vision_then_cached_gives_the_same_saes(run_cli, tmp_path: Path, adapter: str) -> None:
    """Tiny random ViTs (timm, open_clip) on the bundled sample images, patch tokens only."""
    if adapter == "timm":
        model = ("--model", "vit_tiny_patch16_224", "--opt", "pretrained=false", "--opt", "img_size=64",
                 "--opt", "depth=3")
    else:
        from helpers.vision import TINY_CLIP

        cfg = tmp_path / "tiny_clip_live.json"
        cfg.write_text(json.dumps(TINY_CLIP))
        model = ("--model", f"config:{cfg}")
    live = ("--adapter", adapter, *model, "--layers", "-1", "--data", "samples", "--data-opt", "n=12",
            "--model-batch-size", "5")
    train = ("--tokens", "patch", "--batch-size", "32", "--steps", "12", "--d-sae", "64", "--k", "4", "--log-every", "4",
             "--buffer-tokens", "68", "--val-fraction", "0.1", "-q")
    code, _, err = run_cli("train", *live, "--out", str(tmp_path / "live"), "--also-cache", str(tmp_path / "c"), *train)
    assert code == 0, err
    cache = next((tmp_path / "c").iterdir())
    assert open_reader(cache).meta.complete
    run_cfg = json.loads((tmp_path / "live" / "config.json").read_text())
    assert run_cfg["saes"][0]["data"]["buffer_examples"] == 4  # 68 tokens / 17 per image
    code, _, err = run_cli("train", "--data", str(cache), "--mixing", "buffer", "--out", str(tmp_path / "cached"), *train)
    assert code == 0, err
    assert_same_saes(tmp_path / "live", tmp_path / "cached")


# -- the model's threads and the window's dtype -------------------------------------------------------
def _record_forwards(monkeypatch) -> list[tuple[str, int]]:
    """(thread name, torch.get_num_threads()) at each of the adapter's forward batches."""
    import threading

    from sae_core.train.live.source import LiveSource

    seen: list[tuple[str, int]] = []
    forwards = LiveSource._forwards

    def recording(self, *args, **kwargs):
        batches, subset = forwards(self, *args, **kwargs)

        def each():
            for batch in batches:  # the adapter's forward ran in this next()
                seen.append((threading.current_thread().name, torch.get_num_threads()))
                yield batch

        return each(), subset

    monkeypatch.setattr(LiveSource, "_forwards", recording)
    return seen


def test_model_threads_set_the_model_thread_only(run_cli, tmp_path: Path, monkeypatch) -> None:
    """--model-threads 1: the model's forwards (its background thread) run on one torch thread,
    the training thread keeps its own count; the run's config records it (and a resume reads it)."""
    from sae_core.train import TrainConfig

    seen = _record_forwards(monkeypatch)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        code, _, err = run_cli("train", *MLP, "--out", str(tmp_path / "r"), "--model-threads", "1", *TRAIN)
        assert code == 0, err
        assert torch.get_num_threads() == 2  # the main thread's count is untouched
    finally:
        torch.set_num_threads(before)
    model = [n for name, n in seen if name == "sae-live-model"]
    assert model and set(model) == {1}, seen
    assert {n for name, n in seen if name != "sae-live-model"} <= {2}  # validation windows: the main thread
    run_cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert run_cfg["live"]["model_threads"] == 1
    assert TrainConfig.from_json(run_cfg).live.model_threads == 1


def test_model_threads_default_leaves_torch_alone(tmp_path: Path, monkeypatch) -> None:
    from sae_core.train import run_training

    seen = _record_forwards(monkeypatch)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_training(_live_config(tmp_path / "r", steps=5), progress=False)
    finally:
        torch.set_num_threads(before)
    assert seen and {n for _, n in seen} == {2}, seen


def test_model_threads_flag_reaches_the_live_config(tmp_path: Path) -> None:
    from sae_core.errors import ConfigError
    from sae_core.train.flags import TrainFlags
    from sae_core.train.live import LiveConfig

    flags = TrainFlags(out=tmp_path / "r", data="gaussian:20", adapter="mlp", model="m", layers="0", model_threads=3)
    assert flags.live_config().model_threads == 3
    assert TrainFlags(out=tmp_path / "r", data="gaussian:20", adapter="mlp", model="m",
                      layers="0").live_config().model_threads is None
    with pytest.raises(ConfigError, match="--model-threads must be >= 1"):
        LiveConfig(adapter="mlp", model="m", layers=["0"], data="gaussian:20", model_threads=0)


def test_half_precision_windows_stay_half_and_train_as_the_cache(run_cli, tmp_path: Path, monkeypatch) -> None:
    """--dtype bfloat16: the window's samples are kept in bf16 on the host (half the bytes of
    fp32), and the SAEs equal, bit for bit, those trained on the bf16 cache --also-cache wrote."""
    from sae_core.train.live.source import LiveSource

    dtypes: list[torch.dtype] = []
    compute = LiveSource._compute

    def recording(self, *args, **kwargs):
        local = compute(self, *args, **kwargs)
        dtypes.append(local.x.dtype)
        return local

    monkeypatch.setattr(LiveSource, "_compute", recording)
    args = ("--buffer-tokens", "64", "--layer", "1", *TRAIN)
    code, _, err = run_cli("train", *MLP, "--dtype", "bfloat16", "--out", str(tmp_path / "live"),
                           "--also-cache", str(tmp_path / "c"), *args)
    assert code == 0, err
    assert dtypes and set(dtypes) == {torch.bfloat16}
    cache = next((tmp_path / "c").iterdir())
    assert open_reader(cache).meta.dtype == "bfloat16"
    code, _, err = run_cli("train", "--data", str(cache), "--mixing", "buffer", "--out", str(tmp_path / "cached"), *args)
    assert code == 0, err
    assert_same_saes(tmp_path / "live", tmp_path / "cached")


# -- the plan ----------------------------------------------------------------------------------------
def test_buffer_plan_of_the_protocol_equals_the_local_store(tmp_path: Path) -> None:
    """The reader protocol's default (any plugin store) and the local store's fast path give the
    same buffer-plan batches; every selected sample once per epoch; windows follow example ids."""
    from helpers.stores import make_meta, write_cache
    from sae_core.protocols.batch_plan import BatchPlan, Mixing
    from sae_core.protocols.reader import ActivationReader
    from sae_core.stores.batching import epoch_batch_ids
    from sae_core.validation_split import ExampleSplit, Selection

    meta = make_meta(n_layers=2, tokens=3, d_model=4, kinds=["token"] * 3)
    path = write_cache(tmp_path, meta, 57, valid_fn=lambda ids: np.stack([ids % 3 != 0, ids >= 0, ids % 2 == 0], 1))
    reader = open_reader(path)
    select = Selection(ExampleSplit(0.2, 0), "train")
    mixing = Mixing("buffer", 10)
    kw = dict(layers=[1], tokens="all", seed=3, epoch=1, select=select, mixing=mixing)
    fast = list(reader.batches(BatchPlan(8, **kw)))
    default = list(ActivationReader.batches(reader, BatchPlan(8, **kw)))
    assert len(fast) == len(default) > 3
    for a, b in zip(fast, default, strict=True):
        assert torch.equal(a, b)
    ids = np.concatenate(list(epoch_batch_ids(reader, BatchPlan(8, tokens="all", seed=3, epoch=1, select=select,
                                                                mixing=mixing, drop_last=False))))
    assert np.array_equal(np.sort(ids), reader.sample_ids("all", select=select))
    # the first batches come from the first window(s): examples 0..9 (+ the carry)
    plan = BatchPlan(8, seed=3, epoch=1, select=select, mixing=mixing)
    first = reader.batch_sample_ids(plan, 0)
    assert (first // 3 < 10).all()
    assert np.array_equal(first, reader.batch_sample_ids(plan, 0))


# -- errors -------------------------------------------------------------------------------------------
def test_live_errors_are_one_line(run_cli, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    code, out, err = run_cli("cache", "--adapter", "mlp", "--model", "m", "--layers", "0", "--data", "gaussian:20",
                             "--out", str(cache), "-q")
    assert code == 0, err
    cache = _out(out)
    out_dir = str(tmp_path / "run")
    cases = [
        (("--adapter", "mlp", "--model", "m", "--layers", "0", "--data", str(cache)), "is a cache"),
        (("--adapter", "mlp", "--layers", "0", "--data", "gaussian:20"), "needs --model"),
        (("--model", "m", "--data", "gaussian:20"), "--model is for live training"),
        (("--data", str(cache), "--also-cache", str(tmp_path / "x")), "--also-cache is for live training"),
        (("--adapter", "mlp", "--model", "m", "--data", "gaussian:20"), "--layers"),
        (("--adapter", "mlp", "--model", "m", "--layers", "0"), "--data is required"),
        (("--data", str(cache), "--buffer-tokens", "64"), "--mixing buffer"),
        (("--data", str(cache), "--mixing", "sorted"), "mixing must be one of"),
        (("--adapter", "mlp", "--model", "m", "--layers", "0", "--data", "gaussian:20", "--mixing", "shuffle"),
         "needs a cache"),
        (("--adapter", "mlp", "--model", "m", "--layers", "7", "--data", "gaussian:20"), "out of range"),
        (("--data", str(cache), "--max-tokens", "100", "--steps", "3"), "not both"),
        (("--data", str(cache), "--model-threads", "1"), "--model-threads is for live training"),
        (("--adapter", "mlp", "--model", "m", "--layers", "0", "--data", "gaussian:20", "--model-threads", "0"),
         "--model-threads must be >= 1"),
        (("--adapter", "nope", "--model", "m", "--layers", "0", "--data", "gaussian:20"), "nope"),
        (("--adapter", "mlp", "--model", "m", "--layers", "0", "--data", "gaussian:20", "--batch-size", "4096"),
         "fewer than one batch"),
    ]
    for args, needle in cases:
        code, _, err = run_cli("train", "--out", out_dir, "-q", *args)
        assert code == 1, (args, err)
        assert needle in err and len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = run_cli("train", "--out", out_dir, "--resume", "--adapter", "mlp")
    assert code == 1 and "drop --adapter" in err


def test_max_tokens_sets_steps(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("train", *MLP, "--out", str(tmp_path / "r"), "--max-tokens", "300", "--batch-size", "64",
                           "--d-sae", "32", "-q")
    assert code == 0, err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["train"]["steps"] == 5  # ceil(300 / 64)
