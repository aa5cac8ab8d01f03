"""Our downstream metrics agree with SAELens's own evaluation code (``sae_lens.evals``).

A tiny random HookedTransformer with a word-level tokenizer that has no BOS/CLS/SEP (so both
libraries score exactly the same positions), documents that fill whole windows (no padding), an
SAE trained through the CLI and exported with ``sae export --format saelens``: CE clean / spliced /
zero-ablated, CE loss recovered and both KL divergences from ``sae analyze --only downstream``
equal ``sae_lens.evals.get_downstream_reconstruction_metrics`` on the same rows' tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_core.checkpoint import find_checkpoints
from sae_core.stores import open_reader

WORDS = ["sparse", "autoencoders", "find", "features", "in", "the", "activations", "of", "language", "models",
         "layer", "after", "a", "model", "reads", "text"]
TINY = {"n_layers": 2, "d_model": 32, "n_ctx": 32, "d_head": 8, "n_heads": 4, "d_mlp": 64, "act_fn": "gelu",
        "normalization_type": "LN", "default_prepend_bos": False}
CONTEXT = 16


def _word_tokenizer(path: Path) -> int:
    """A whitespace word-level tokenizer over WORDS with pad/eos/unk and no special tokens added."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *WORDS])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<eos>")
    fast.save_pretrained(path)
    return len(vocab)


class _Tokens:
    """The part of SAELens's ActivationsStore its reconstruction metrics use: token batches."""

    def __init__(self, tokens: torch.Tensor, batch: int) -> None:
        self.batches = list(tokens.split(batch))

    def get_batch_tokens(self, n: int) -> torch.Tensor:
        return self.batches.pop(0)


def test_ce_recovered_and_kl_match_saelens_evals(tmp_path: Path, run_cli) -> None:
    from sae_core.caching import build_adapter
    from sae_core.inference.loading import request_for_cache
    from sae_lens import SAE
    from sae_lens.evals import get_downstream_reconstruction_metrics
    from sae_lens.training.activation_scaler import ActivationScaler

    vocab = _word_tokenizer(tmp_path / "tok")
    (tmp_path / "tiny.json").write_text(json.dumps({**TINY, "d_vocab": vocab}))
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, 2 * CONTEXT)) for _ in range(12)]  # 2 full windows each, no padding
    (tmp_path / "docs.txt").write_text("\n\n".join(docs))
    code, out, err = run_cli("cache", "--adapter", "tlens", "--model", f"config:{tmp_path / 'tiny.json'}", "--layers", "0",
                             "--opt", f"tokenizer={tmp_path / 'tok'}", "--opt", "seed=1", "--data", f"text:{tmp_path / 'docs.txt'}",
                             "--context-size", str(CONTEXT), "--out", str(tmp_path / "cache"), "-q")
    assert code == 0, err
    cache = out.strip().splitlines()[-1]
    code, _, err = run_cli("train", "--data", cache, "--out", str(tmp_path / "run"), "--arch", "topk", "--k", "4",
                           "--exp-factor", "2", "--steps", "30", "--batch-size", "64", "-q")
    assert code == 0, err
    code, out, err = run_cli("analyze", str(tmp_path / "run"), "--only", "downstream", "-q",
                             "--option", "split=tail", "--option", "heldout_frac=0.5", "--option", "downstream_batch=4")
    assert code == 0, err
    (ckpt,) = find_checkpoints(tmp_path / "run")
    ours = json.loads((ckpt / "downstream.json").read_text())
    assert ours["kind"] == "lm_ce" and ours["cache_rel_error"] < 1e-6
    lo, hi = ours["rows"]
    reader = open_reader(cache)
    _, index = reader.read_examples(lo, hi, layers=[0])
    assert index["valid"].all() and (index["position"] >= 0).all()  # full windows, no specials: same positions
    assert ours["n_targets"] == (hi - lo) * (CONTEXT - 1) and ours["n_kl_positions"] == (hi - lo) * CONTEXT

    code, _, err = run_cli("export", str(ckpt), "--format", "saelens", "--out", str(tmp_path / "exported"))
    assert code == 0, err
    sae = SAE.load_from_disk(str(tmp_path / "exported"))
    model = build_adapter("tlens", request_for_cache(reader.meta)).model  # the model the cache was made with
    tokens = torch.from_numpy(index["token"].astype(np.int64))
    batch = 4
    theirs = get_downstream_reconstruction_metrics(
        sae, model, _Tokens(tokens, batch), ActivationScaler(), compute_kl=True, compute_ce_loss=True,
        n_batches=-(-len(tokens) // batch), eval_batch_size_prompts=batch, ignore_tokens=None)
    pairs = {"ce_clean": "ce_loss_without_sae", "ce_spliced": "ce_loss_with_sae", "ce_zero_ablated": "ce_loss_with_ablation",
             "ce_loss_recovered": "ce_loss_score", "kl_spliced": "kl_div_with_sae", "kl_zero_ablated": "kl_div_with_ablation"}
    for mine, sl in pairs.items():
        # CE recovered is a ratio of CE differences: the 1e-7 relative agreement of each CE grows by
        # CE / (CE_zero - CE_clean) (~10x here), so it is compared at 1e-4
        rel = 1e-4 if mine == "ce_loss_recovered" else 1e-5
        assert ours[mine] == pytest.approx(theirs[sl], rel=rel, abs=1e-6), (mine, ours[mine], sl, theirs[sl])
    assert ours["kl_spliced"] > 1e-4 and ours["ce_spliced"] != pytest.approx(ours["ce_clean"], abs=1e-4)  # not trivial
    for key in ("ce_clean_se", "ce_spliced_se", "kl_spliced_se", "ce_loss_recovered_se"):
        assert ours[key] is not None and ours[key] > 0
