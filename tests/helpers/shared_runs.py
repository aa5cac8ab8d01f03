"""Small cached runs shared by the test modules that run models with SAEs attached
(``test_downstream``, ``test_inference``): each is built once per pytest session (the cache key
is the session's ``tmp_path_factory``), which keeps the suite inside its time budget. Tests that
write results beside a checkpoint must only read what they wrote themselves."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sae_text.minilm import minilm_dir

TINY_LM = {"n_layers": 2, "d_model": 32, "n_ctx": 64, "d_head": 8, "n_heads": 4, "d_mlp": 64,
           "d_vocab": 30522, "act_fn": "gelu", "normalization_type": "LN", "default_prepend_bos": True}
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 3, "width": 48, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}}
TIMM_ARGS = ["--model", "vit_tiny_patch16_224", "--opt", "pretrained=false", "--opt", "img_size=64", "--opt", "depth=3"]
WORDS = ["sparse", "autoencoders", "find", "features", "in", "the", "activations", "of", "language", "models", "layer", "after", "layer"]


def once_per_session(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Cache ``build(tmp_path_factory)`` per session (the factory is not hashable: keyed by id)."""
    done: dict[int, Any] = {}

    @functools.wraps(build)
    def get(tmp_path_factory: Any) -> Any:
        key = id(tmp_path_factory)
        if key not in done:
            done[key] = build(tmp_path_factory)
        return done[key]

    return get


def cli():
    from conftest import cli_runner

    return cli_runner()


def cache_and_train(root: Path, cache_args: list[str], *train_args: str) -> tuple[Path, Path]:
    run = cli()
    code, out, err = run("cache", "--out", str(root / "cache"), "-q", *cache_args)
    assert code == 0, err
    cache = Path(out.strip().splitlines()[-1])
    code, _, err = run("train", "--data", str(cache), "--out", str(root / "run"), "--arch", "topk", "--exp-factor", "2",
                       "--steps", "20", "-q", *train_args)
    assert code == 0, err
    return cache, root / "run"


@once_per_session
def lm_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny random causal HookedTransformer (MiniLM's tokenizer: [CLS] … [SEP] windows) and a
    TopK SAE on its layer 0: (cache, run)."""
    root = tmp_path_factory.mktemp("lm")
    (root / "tiny.json").write_text(json.dumps(TINY_LM))
    rng = np.random.default_rng(0)
    (root / "docs.txt").write_text("\n\n".join(" ".join(rng.choice(WORDS, 30)) for _ in range(16)))
    return cache_and_train(
        root, ["--adapter", "tlens", "--model", f"config:{root / 'tiny.json'}", "--layers", "0", "--opt", f"tokenizer={minilm_dir()}",
               "--opt", "seed=3", "--data", f"text:{root / 'docs.txt'}", "--context-size", "16"],
        "--k", "4", "--batch-size", "64")


@once_per_session
def minilm_run(tmp_path_factory) -> tuple[Path, Path]:
    """The real bundled MiniLM, layer 3, and a TopK SAE: (cache, run)."""
    root = tmp_path_factory.mktemp("minilm")
    (root / "docs.txt").write_text("\n\n".join([
        "Sparse autoencoders decompose activations into interpretable features.",
        "The quick brown fox jumps over the lazy dog, again and again.",
        "Residual streams carry information between transformer blocks, layer after layer.",
        "A sentence encoder maps a text to one vector.",
    ]))
    return cache_and_train(root, ["--adapter", "tlens", "--model", "minilm", "--layers", "3",
                                  "--data", f"text:{root / 'docs.txt'}", "--context-size", "16"],
                           "--k", "16", "--batch-size", "32")


@once_per_session
def vit_runs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Tiny random open_clip (SAE on cls tokens) and timm (SAE on patches) ViTs, block 1."""
    root = tmp_path_factory.mktemp("vit")
    cfg = root / "tiny_clip_downstream.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    data = ["--data", "samples", "--data-opt", "n=12", "--layers", "1"]
    return {
        "clip": cache_and_train(root / "clip", ["--adapter", "clip", "--model", f"config:{cfg}", *data],
                                "--tokens", "cls", "--k", "8", "--batch-size", "4"),
        "timm": cache_and_train(root / "timm", ["--adapter", "timm", *TIMM_ARGS, *data],
                                "--tokens", "patch", "--k", "8", "--batch-size", "32"),
    }


@once_per_session
def analysed_lm_run(tmp_path_factory) -> Path:
    """A copy of :func:`lm_run`'s run, analysed (``sae analyze``) in its own directory: tests may
    add or rewrite analysis files there without touching the shared run."""
    import shutil

    _, run = lm_run(tmp_path_factory)
    copy = tmp_path_factory.mktemp("lm_analysed") / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("state"))
    code, _, err = cli()("analyze", str(copy), "--k", "4", "-q")
    assert code == 0, err
    return copy
