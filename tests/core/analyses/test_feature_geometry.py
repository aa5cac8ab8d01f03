"""Decoder neighbours, co-occurrence, logit effects and feature summaries against brute-force
references (dense numpy, hand-written unembeddings), and `sae analyze` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import helpers.shared_runs as shared_runs
import numpy as np
import pytest
import torch
from sae_core import SAEError
from sae_core.analyses import cooccurrence as cooc_mod
from sae_core.analyses.cooccurrence import Cooccurrence
from sae_core.analyses.logit_effects import folded_unembedding, logit_effects
from sae_core.analyses.neighbours import decoder_neighbours
from sae_core.checkpoint import find_checkpoints, load_sae
from sae_core.protocols import ActivationBatch, CacheMetadata
from sae_core.stores import open_reader, open_writer
from sae_core.train import expand, run_training
from safetensors.torch import load_file

GEOMETRY = ["feature-stats", "top-examples", "decoder-neighbours", "cooccurrence", "logit-effects", "feature-summaries"]


def _check_top(values: np.ndarray, ids: np.ndarray, dense: np.ndarray, n: int, largest: bool = True) -> None:
    """values/ids (d, n) are each row's n best entries of ``dense`` (d, m), ties in any order."""
    for i in range(dense.shape[0]):
        want = np.sort(dense[i])[::-1][:n] if largest else np.sort(dense[i])[:n]
        np.testing.assert_allclose(values[i], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dense[i, ids[i]], values[i], rtol=1e-5, atol=1e-5)


def test_decoder_neighbours_match_dense_cosine() -> None:
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(50, 8, generator=gen)
    W[7] = 3 * W[3]  # a duplicate direction: each other's nearest, cosine 1
    W[9] = 0  # a dead decoder row: cosine 0 with everything
    idx, cos = decoder_neighbours(W, 6, block=7)
    assert idx.shape == (50, 6) and idx.dtype == torch.int64 and cos.dtype == torch.float32
    u = W.numpy() / np.maximum(np.linalg.norm(W.numpy(), axis=1, keepdims=True), 1e-12)
    dense = u @ u.T
    np.fill_diagonal(dense, -np.inf)
    _check_top(cos.numpy(), idx.numpy(), dense, 6)
    assert (idx != torch.arange(50)[:, None]).all()  # never itself
    assert idx[3, 0] == 7 and idx[7, 0] == 3 and cos[3, 0] == pytest.approx(1.0, abs=1e-6)
    assert decoder_neighbours(W[:3], 10)[0].shape == (3, 2)  # n clipped to d_sae - 1


def _dense_cooccurrence(A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    A = A.astype(np.int64)
    c = A.T @ A
    n_i = np.diag(c).copy()
    np.fill_diagonal(c, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        jac = np.where(c > 0, c / (n_i[:, None] + n_i[None, :] - c), -1.0)
        pmi = np.log(c * len(A) / (n_i[:, None] * n_i[None, :]))
    return c, n_i, jac, pmi


def test_cooccurrence_matches_dense_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact counts, Jaccard, PMI and padding, with blocks smaller than d_sae, several chunks and
    the pair expansion split into pieces."""
    monkeypatch.setattr(cooc_mod, "PAIRS", 37)
    rng = np.random.default_rng(0)
    d, N, n = 41, 700, 6
    A = rng.random((N, d)) < rng.random(d) * 0.3  # (tokens, d_sae)
    A[:, 5] = False  # dead
    A[:, 6] = False
    A[3, 6] = True  # fires once, alone: no partner
    A[3, :] = False
    A[3, 6] = True
    A[:, 8] = A[:, 2]  # always together: Jaccard 1
    codes = torch.from_numpy(A * rng.random((N, d)) * 3).float()
    acc = Cooccurrence(d, n_top=n, block=9)
    for lo in range(0, N, 97):
        acc.update_codes(codes[lo : lo + 97])
    r = acc.result()
    c, n_i, jac, pmi = _dense_cooccurrence(A)
    assert r["n_tokens"] == N and r["n_fired"].tolist() == n_i.tolist()
    for i in range(d):
        want = np.sort(jac[i])[::-1][:n]
        np.testing.assert_allclose(r["jaccard"][i].numpy(), np.where(want > 0, want, 0), rtol=1e-6)
        for k, j in enumerate(r["indices"][i].tolist()):
            if j < 0:
                assert r["count"][i, k] == 0 and r["pmi"][i, k] == 0 and want[k] <= 0
                continue
            assert j != i and r["count"][i, k] == c[i, j]
            assert r["jaccard"][i, k] == pytest.approx(jac[i, j], rel=1e-6)
            assert r["pmi"][i, k] == pytest.approx(pmi[i, j], rel=1e-5, abs=1e-6)
    assert (r["indices"][5] == -1).all() and (r["indices"][6] == -1).all()
    assert r["indices"][2, 0] == 8 and r["jaccard"][2, 0] == 1.0


def test_cooccurrence_update_with_explicit_triplets_and_errors(tmp_path: Path) -> None:
    acc = Cooccurrence(4, n_top=2, tmp_dir=tmp_path)
    # tokens 10, 11 (twice the same entry: counted once), 12 has nothing firing
    acc.update(torch.tensor([10, 10, 11, 11, 11]), torch.tensor([0, 1, 1, 2, 2]), n_tokens=3)
    with pytest.raises(SAEError, match="token numbers must increase"):
        acc.update(torch.tensor([11]), torch.tensor([0]), n_tokens=1)
    with pytest.raises(SAEError, match=r"latent ids must be in \[0, 4\)"):
        acc.update(torch.tensor([20]), torch.tensor([4]), n_tokens=1)
    r = acc.result()
    assert r["n_tokens"] == 3 and r["n_fired"].tolist() == [1, 2, 1, 0]
    assert r["indices"][1].tolist() == [0, 2] or r["indices"][1].tolist() == [2, 0]
    assert r["count"][1].tolist() == [1, 1] and r["jaccard"][1].tolist() == [0.5, 0.5]
    assert r["pmi"][0, 0] == pytest.approx(np.log(1 * 3 / (1 * 2)))  # refused chunks add no tokens
    assert not list(tmp_path.iterdir())  # the temporary files are gone


def _reference_logits(d: torch.Tensor, w: torch.Tensor | None, W_U: torch.Tensor, layernorm: bool) -> torch.Tensor:
    """By hand: the LayerNorm's centring applied to the direction, its scale, the unembedding,
    then the logits centred over the vocabulary."""
    if layernorm:
        d = d - d.mean(-1, keepdim=True)
    if w is not None:
        d = d * w
    logits = d @ W_U
    return logits - logits.mean(-1, keepdim=True)


def test_logit_effects_of_tiny_gpt2_match_a_hand_written_reference() -> None:
    from sae_text.adapters.unembed import hf_unembedding
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=16, n_layer=1, n_head=2, n_positions=32)).eval()
    with torch.no_grad():
        model.transformer.ln_f.weight.uniform_(0.5, 2.0)  # a non-trivial scale to fold
    u = hf_unembedding(model, causal=True)
    assert u.norm == "layernorm" and "ln_f" in u.source
    W_dec = torch.randn(12, 16)
    ref = _reference_logits(W_dec, model.transformer.ln_f.weight.detach(), model.transformer.wte.weight.detach().T, True)
    torch.testing.assert_close(W_dec @ folded_unembedding(u), ref, rtol=1e-4, atol=1e-5)
    eff = logit_effects(W_dec, folded_unembedding(u), 5, block=5)
    _check_top(eff["top_values"].numpy(), eff["top_ids"].numpy(), ref.numpy(), 5)
    _check_top(eff["bottom_values"].numpy(), eff["bottom_ids"].numpy(), ref.numpy(), 5, largest=False)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    with pytest.raises(SAEError, match="not a causal language model"):
        hf_unembedding(bert, causal=False)
    with pytest.raises(SAEError, match="no LM head"):
        hf_unembedding(bert, causal=True)


def test_logit_effects_of_hooked_transformer_agree_with_transformer_lens_folding() -> None:
    """A HookedTransformer with LN: the hand-written reference; the same model after
    TransformerLens's own ``fold_ln`` + ``center_unembed`` (LNPre) gives the same map."""
    from sae_text.adapters.unembed import tlens_unembedding
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = {**shared_runs.TINY_LM, "d_vocab": 61, "n_layers": 1}
    model = HookedTransformer(HookedTransformerConfig(**cfg))
    with torch.no_grad():
        model.ln_final.w.uniform_(0.5, 2.0)
    u = tlens_unembedding(model, "hooked", causal=True)
    assert u.norm == "layernorm" and u.norm_weight is not None
    W_dec = torch.randn(9, cfg["d_model"])
    ref = _reference_logits(W_dec, model.ln_final.w.detach(), model.W_U.detach(), True)
    torch.testing.assert_close(W_dec @ folded_unembedding(u), ref, rtol=1e-4, atol=1e-5)
    model.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=True)
    folded = tlens_unembedding(model, "hooked", causal=True)
    assert model.cfg.normalization_type == "LNPre" and folded.norm_weight is None
    torch.testing.assert_close(W_dec @ folded_unembedding(folded), ref, rtol=1e-4, atol=1e-5)
    rms = HookedTransformer(HookedTransformerConfig(**{**cfg, "normalization_type": "RMS"}))
    u = tlens_unembedding(rms, "hooked", causal=True)
    assert u.norm == "rmsnorm"  # no centring: only the scale
    torch.testing.assert_close(W_dec @ folded_unembedding(u),
                               _reference_logits(W_dec, rms.ln_final.w.detach(), rms.W_U.detach(), False),
                               rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic image-like cache (adapter 't', not installed) and a TopK SAE on its patches."""
    root = tmp_path_factory.mktemp("geom")
    meta = CacheMetadata(adapter="t", model="m", layers=["a"], d_model=10, dtype="float32", tokens_per_example=4,
                         token_kinds=["cls", "patch", "patch", "patch"], dataset={"spec": "synthetic"})
    gen = torch.Generator().manual_seed(1)
    w = open_writer(root / "c", meta, shard_examples=64)
    for lo in range(0, 320, 40):
        w.write(ActivationBatch(acts=torch.randn(40, 1, 4, 10, generator=gen).exp(), example_ids=np.arange(lo, lo + 40)))
    cache = w.close()
    cfg = expand(str(cache), 10, {"layer": "a", "tokens": "patch", "batch_size": 64}, {"arch": "topk", "k": 3, "d_sae": 20},
                 {"steps": 20}, str(root / "run"))
    return cache, run_training(cfg, progress=False)


def test_analyze_cooccurrence_and_summaries_end_to_end(run_cli, image_run) -> None:
    """Through the CLI, cooccurrence in several chunks and blocks equals the dense count over
    every patch token; logit-effects records a skip; every summary row equals its source files."""
    cache, run = image_run
    args = [a for name in reversed(GEOMETRY) for a in ("--only", name)]  # run in the order `requires` gives
    code, out, err = run_cli("analyze", str(run), *args, "--option", "split=all", "--option", "cooccurrence_block=7",
                             "--option", "cooccurrence_n=4", "--batch-size", "64", "-q")
    assert code == 0, err
    (ckpt,) = find_checkpoints(run)
    reader = open_reader(cache)
    acts, _ = reader.read_examples(0, reader.n_examples)
    with torch.no_grad():
        f = load_sae(ckpt).encode(acts[:, 0][:, 1:])  # (n, 3 patches, d_sae)
    A = (f != 0).reshape(-1, f.shape[-1]).numpy()
    c, _, jac, _ = _dense_cooccurrence(A)
    co = load_file(str(ckpt / "cooccurrence.safetensors"))
    assert co["indices"].shape == (20, 4)
    for i in range(20):
        want = np.sort(jac[i])[::-1][:4]
        np.testing.assert_allclose(co["jaccard"][i].numpy(), np.where(want > 0, want, 0), rtol=1e-6)
        for k, j in enumerate(co["indices"][i].tolist()):
            assert j < 0 or co["count"][i, k] == c[i, j]
    meta = json.loads((ckpt / "cooccurrence.json").read_text())
    assert meta["n_tokens"] == A.shape[0] and meta["split"] == "all" and meta["top_pairs"]
    best = meta["top_pairs"][0]
    assert best["jaccard"] == pytest.approx(jac[jac > 0].max()) and best["count"] == c[best["i"], best["j"]]
    assert "not installed" in json.loads((ckpt / "logit_effects.json").read_text())["skipped"]
    assert not (ckpt / "logit_effects.safetensors").exists()
    summary = json.loads(out)[ckpt.name]["feature-summaries"]
    assert summary == {"latents": 20, "missing": ["logit-effects"]}
    rows = [json.loads(line) for line in (ckpt / "feature_summaries.jsonl").read_text().splitlines()]
    stats = load_file(str(ckpt / "feature_stats.safetensors"))
    top = load_file(str(ckpt / "top_examples.safetensors"))
    nb = load_file(str(ckpt / "neighbours.safetensors"))
    assert [r["latent"] for r in rows] == list(range(20))
    for r in rows:
        i = r["latent"]
        assert r["frequency"] == pytest.approx(float(stats["frequency"][i]))
        assert r["max_activation"] == pytest.approx(float(stats["max_activation"][i]))
        assert r["mean_activation"] == pytest.approx(float(stats["mean_activation"][i]))
        assert r["top_examples"] == top["examples"][i][top["rows"][i] >= 0].tolist()
        assert "top_tokens" not in r and "promoted" not in r  # images: example ids, no tokens
        assert [n["latent"] for n in r["neighbours"]] == nb["indices"][i].tolist()
        assert [n["cosine"] for n in r["neighbours"]] == pytest.approx(nb["cosine"][i].tolist())
        kept = co["indices"][i] >= 0
        assert [x["latent"] for x in r["cooccurring"]] == co["indices"][i][kept].tolist()
        assert [x["count"] for x in r["cooccurring"]] == co["count"][i][kept].tolist()


def test_lm_logit_effects_and_token_summaries(lm_tmp) -> None:
    """A tiny causal HookedTransformer's SAE: logit effects equal the hand-written reference on the
    re-created model; summary rows name tokens with the cache's vocab.json."""
    from sae_core.analyses.runner import analyse_run
    from sae_core.inference.loading import adapter_for_cache
    from sae_core.tokens import detokenize

    cache, run = lm_tmp
    (ckpt,) = find_checkpoints(run)
    out = analyse_run(run, only=GEOMETRY, options={"logit_n": "7", "split": "all"}, progress=False)[ckpt.name]
    assert out["logit-effects"]["n"] == 7 and out["feature-summaries"]["missing"] == []
    model = adapter_for_cache(open_reader(cache).meta).model
    sae = load_sae(ckpt)
    ref = _reference_logits(sae.W_dec.detach(), model.ln_final.w.detach(), model.W_U.detach(), True).numpy()
    eff = load_file(str(ckpt / "logit_effects.safetensors"))
    _check_top(eff["top_values"].numpy(), eff["top_ids"].numpy(), ref, 7)
    _check_top(eff["bottom_values"].numpy(), eff["bottom_ids"].numpy(), ref, 7, largest=False)
    doc = json.loads((ckpt / "logit_effects.json").read_text())
    vocab = json.loads((cache / "vocab.json").read_text())
    assert doc["norm"]["final_norm"] == "layernorm" and doc["norm"]["centred_over_vocab"]
    assert all(doc["tokens"][str(int(i))] == vocab[int(i)] for i in eff["top_ids"].flatten())
    top = load_file(str(ckpt / "top_examples.safetensors"))
    rows = [json.loads(line) for line in (ckpt / "feature_summaries.jsonl").read_text().splitlines()]
    for r in rows:
        i = r["latent"]
        assert [p["id"] for p in r["promoted"]] == eff["top_ids"][i].tolist()
        assert r["promoted"][0]["token"] == detokenize(vocab[int(eff["top_ids"][i, 0])])
        assert [p["logit"] for p in r["suppressed"]] == pytest.approx(eff["bottom_values"][i].tolist())
        ids, acts = top["token_ids"][i].numpy(), top["token_acts"][i].abs().float().numpy()  # (k, T)
        fired = (acts > 0) & (ids >= 0) & (top["rows"][i] >= 0).numpy()[:, None]
        if not fired.any():
            assert r["top_tokens"] == []
            continue
        totals = {t: acts[fired & (ids == t)].sum() for t in set(ids[fired].tolist())}
        first = r["top_tokens"][0]
        assert totals[first["id"]] == pytest.approx(max(totals.values()), rel=1e-5)
        assert first["token"] == detokenize(vocab[first["id"]]) and first["count"] == int((fired & (ids == first["id"])).sum())


@pytest.fixture(scope="module")
def lm_tmp(tmp_path_factory) -> tuple[Path, Path]:
    return shared_runs.lm_run(tmp_path_factory)


def test_hf_adapter_logit_effects(run_cli, tmp_path: Path) -> None:
    """The hf adapter end to end: a tiny random GPT-2 gets the reference table through
    HFAdapter.unembedding (the model re-created from the cache's metadata)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = shared_runs.WORDS
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *dict.fromkeys(words)])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=2, n_head=2, n_positions=32,
                                      bos_token_id=1, eos_token_id=2))
    with torch.no_grad():
        gpt2.transformer.ln_f.weight.uniform_(0.5, 2.0)
    gpt2.save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    rng = np.random.default_rng(0)
    (tmp_path / "docs.txt").write_text("\n\n".join(" ".join(rng.choice(words, 20)) for _ in range(8)))
    _, run = shared_runs.cache_and_train(
        tmp_path / "run", ["--adapter", "hf", "--model", str(tmp_path / "gpt2"), "--layers", "0",
                           "--data", f"text:{tmp_path / 'docs.txt'}", "--context-size", "12"],
        "--k", "2", "--batch-size", "16", "--steps", "5")
    code, _, err = run_cli("analyze", str(run), "--only", "logit-effects", "--option", "logit_n=3", "-q")
    assert code == 0, err
    (ckpt,) = find_checkpoints(run)
    doc = json.loads((ckpt / "logit_effects.json").read_text())
    assert "ln_f" in doc["norm"]["source"]
    ref = _reference_logits(load_sae(ckpt).W_dec.detach(), gpt2.transformer.ln_f.weight.detach(),
                            gpt2.lm_head.weight.detach().T, True).numpy()
    eff = load_file(str(ckpt / "logit_effects.safetensors"))
    _check_top(eff["top_values"].numpy(), eff["top_ids"].numpy(), ref, 3)
    _check_top(eff["bottom_values"].numpy(), eff["bottom_ids"].numpy(), ref, 3, largest=False)


def test_encoder_caches_record_a_logit_effects_skip(tmp_path: Path) -> None:
    """A cache whose metadata says the model is not causal (the hf adapter's BERT/MiniLM caches):
    a skip, without loading the model; a stale table is removed."""
    from sae_core.analyses.runner import analyse_run

    meta = CacheMetadata(adapter="hf", model="sentence-transformers/all-MiniLM-L6-v2", layers=["encoder.layer.3"],
                         d_model=8, dtype="float32", tokens_per_example=4, token_kinds=["token"] * 4,
                         dataset={"spec": "text:x"}, extra={"causal": False})
    w = open_writer(tmp_path / "c", meta)
    w.write(ActivationBatch(acts=torch.randn(64, 1, 4, 8), example_ids=np.arange(64)))
    cache = w.close()
    run = run_training(expand(str(cache), 8, {"batch_size": 32}, {"arch": "topk", "k": 2, "d_sae": 16}, {"steps": 5},
                              str(tmp_path / "run")), progress=False)
    (ckpt,) = find_checkpoints(run)
    (ckpt / "logit_effects.safetensors").write_bytes(b"stale")
    out = analyse_run(run, only=["logit-effects"], progress=False)[ckpt.name]["logit-effects"]
    assert "not a causal language model" in out["skipped"]
    assert json.loads((ckpt / "logit_effects.json").read_text())["skipped"] == out["skipped"]
    assert not (ckpt / "logit_effects.safetensors").exists()


def test_minilm_has_no_unembedding(minilm_tmp) -> None:
    """The bundled MiniLM (a BERT encoder through the tlens adapter's TransformerBridge): a skip
    with the reason, and feature summaries without logit fields."""
    from sae_core.analyses.runner import analyse_run

    _, run = minilm_tmp
    (ckpt,) = find_checkpoints(run)
    out = analyse_run(run, only=["logit-effects", "feature-stats", "feature-summaries"], progress=False)[ckpt.name]
    assert "not a causal language model" in out["logit-effects"]["skipped"]
    assert "logit-effects" in out["feature-summaries"]["missing"]
    row = json.loads((ckpt / "feature_summaries.jsonl").read_text().splitlines()[0])
    assert "promoted" not in row and "frequency" in row


@pytest.fixture(scope="module")
def minilm_tmp(tmp_path_factory) -> tuple[Path, Path]:
    return shared_runs.minilm_run(tmp_path_factory)
