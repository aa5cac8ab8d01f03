"""sae-text: cached activations equal direct forwards; masks; datasets; model resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.text import TEXT_DOCS, TINY_TLENS_CFG
from sae_core.errors import SAEError
from sae_core.stores import open_reader
from sae_text.minilm import minilm_dir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(TEXT_DOCS))
    return path


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY_TLENS_CFG))
    return path


def _cache(run_cli, out: Path, model: str, corpus: Path, *extra: str) -> Path:
    code, stdout, err = run_cli("cache", "--adapter", "tlens", "--model", model, "--data", f"text:{corpus}",
                                "--out", str(out), "--context-size", "16", "--batch-size", "3", "-q", *extra)
    assert code == 0, err
    return Path(stdout.strip().splitlines()[-1])


def test_tiny_hooked_transformer_cache_equals_run_with_cache(run_cli, tmp_path: Path, corpus: Path, tiny_config: Path) -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    path = _cache(run_cli, tmp_path, f"config:{tiny_config}", corpus, "--layers", "0,-1",
                  "--opt", f"tokenizer={minilm_dir()}", "--opt", "seed=3")
    reader = open_reader(path)
    assert reader.meta.layers == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    acts, index = reader.read_examples(0, reader.n_examples)
    torch.manual_seed(3)
    model = HookedTransformer(HookedTransformerConfig(**TINY_TLENS_CFG), tokenizer=AutoTokenizer.from_pretrained(minilm_dir()))
    tokens = torch.from_numpy(index["token"].astype(np.int64))
    pad = tokens == model.tokenizer.pad_token_id
    _, cache = model.run_with_cache(tokens, attention_mask=(~pad).long())
    for li, name in enumerate(reader.meta.layers):
        keep = torch.from_numpy(index["valid"].astype(bool))
        torch.testing.assert_close(acts[:, li][keep], cache[name][keep], rtol=1e-4, atol=1e-4)
    # windows: [CLS] body [SEP] pad...; specials and padding are never valid
    tok = model.tokenizer
    specials = np.isin(index["token"], [tok.cls_token_id, tok.sep_token_id])
    assert not index["valid"][specials].any() and not index["valid"][index["token"] == tok.pad_token_id].any()
    assert (index["token"][:, 0] == tok.cls_token_id).all()
    # document 1 spans several windows, with positions continuing across them
    doc1 = index["example"][:, 0] == 1
    assert doc1.sum() > 1
    pos = index["position"][doc1][index["valid"][doc1].astype(bool)]
    assert np.array_equal(pos, np.arange(len(pos)))
    vocab = json.loads((path / "vocab.json").read_text())
    assert vocab[tok.cls_token_id] == "[CLS]"


def test_include_special_keeps_bos(run_cli, tmp_path: Path, corpus: Path, tiny_config: Path) -> None:
    path = _cache(run_cli, tmp_path, f"config:{tiny_config}", corpus, "--layers", "0",
                  "--opt", f"tokenizer={minilm_dir()}", "--opt", "include_special=true")
    _, index = open_reader(path).read_examples(0, 1)
    assert index["valid"][0, 0] == 1


def test_minilm_real_model(run_cli, tmp_path: Path, corpus: Path) -> None:
    """The embedded offline default, for real: cache == a direct TransformerBridge forward."""
    from transformer_lens.model_bridge import TransformerBridge

    path = _cache(run_cli, tmp_path, "minilm", corpus, "--layers", "3", "--hook", "blocks.3.attn.hook_z",
                  "--max-examples", "3")
    reader = open_reader(path)
    assert reader.meta.d_model == 384 and reader.meta.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert reader.meta.layers == ["blocks.3.hook_resid_post", "blocks.3.attn.hook_z"]
    acts, index = reader.read_examples(0, reader.n_examples)
    bridge = TransformerBridge.boot_transformers(str(minilm_dir()), device="cpu")
    tokens = torch.from_numpy(index["token"].astype(np.int64))
    mask = (tokens != bridge.tokenizer.pad_token_id).long()
    _, cache = bridge.run_with_cache(tokens, attention_mask=mask)
    keep = torch.from_numpy(index["valid"].astype(bool))
    torch.testing.assert_close(acts[:, 0][keep], cache["blocks.3.hook_resid_post"][keep], rtol=1e-4, atol=1e-4)
    hook_z = cache["blocks.3.attn.hook_z"].reshape(*tokens.shape, -1)  # (batch, pos, 12 heads * 32) on the bridge
    torch.testing.assert_close(acts[:, 1][keep], hook_z[keep], rtol=1e-4, atol=1e-4)
    assert set(index["example"][:, 0]) == {0, 1, 2}


def test_unknown_hook_lists_valid_ones(run_cli, tmp_path: Path, corpus: Path, tiny_config: Path) -> None:
    code, _, err = run_cli("cache", "--adapter", "tlens", "--model", f"config:{tiny_config}", "--hook", "blocks.0.resid",
                           "--data", f"text:{corpus}", "--out", str(tmp_path), "--opt", f"tokenizer={minilm_dir()}", "-q")
    assert code == 1 and "unknown hook 'blocks.0.resid'" in err and "blocks.0.hook_resid_post" in err
    code, _, err = run_cli("cache", "--adapter", "tlens", "--model", f"config:{tiny_config}", "--layers", "5",
                           "--data", f"text:{corpus}", "--out", str(tmp_path), "--opt", f"tokenizer={minilm_dir()}", "-q")
    assert code == 1 and "out of range: the model has 2 blocks" in err


def test_hub_names_dispatch(monkeypatch: pytest.MonkeyPatch, tiny_config: Path) -> None:
    """Known names go to HookedTransformer.from_pretrained, other ids to TransformerBridge (the
    network boundary is mocked: both loaders are replaced by fakes returning a tiny model)."""
    import transformer_lens
    from sae_core.protocols import AdapterRequest
    from sae_text.adapters.tlens import TLensAdapter
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    tiny = HookedTransformer(HookedTransformerConfig(**TINY_TLENS_CFG), tokenizer=AutoTokenizer.from_pretrained(minilm_dir()))
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(transformer_lens.HookedTransformer, "from_pretrained",
                        classmethod(lambda cls, name, **kw: calls.append(("hooked", name)) or tiny))
    monkeypatch.setattr(TransformerBridge, "boot_transformers", staticmethod(lambda name, **kw: calls.append(("bridge", name)) or tiny))
    TLensAdapter(AdapterRequest(model="gpt2", layers=["1"]))
    TLensAdapter(AdapterRequest(model="someone/custom-lm", layers=["0"]))
    assert calls == [("hooked", "gpt2"), ("bridge", "someone/custom-lm")]


def test_text_datasets(tmp_path: Path) -> None:
    from sae_core.datasets import open_dataset
    from sae_core.errors import DataError

    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n\n{"text": "three"}\n')
    (tmp_path / "b.json").write_text(json.dumps(["alpha", "beta"]))
    (tmp_path / "c.json").write_text(json.dumps([{"body": "x1"}, {"body": "x2"}]))
    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    (folder / "z.txt").write_text("zed")
    (folder / "sub" / "a.txt").write_text("ay")
    assert [open_dataset(f"jsonl:{tmp_path / 'a.jsonl'}", "text")[i].data for i in range(3)] == ["one", "two", "three"]
    assert len(open_dataset(f"jsonl:{tmp_path / 'a.jsonl'}", "text", limit=2)) == 2
    assert open_dataset(f"json:{tmp_path / 'b.json'}", "text")[1].data == "beta"
    assert open_dataset(f"json:{tmp_path / 'c.json'}", "text", field="body")[0].data == "x1"
    ds = open_dataset(f"text:{folder}", "text")
    assert [ds[i].source for i in range(2)] == ["sub/a.txt", "z.txt"]
    with pytest.raises(DataError, match="has no field 'text'"):
        open_dataset(f"json:{tmp_path / 'c.json'}", "text")
    with pytest.raises(DataError, match="no such file"):
        open_dataset(f"text:{tmp_path / 'missing'}", "text")
    with pytest.raises(DataError, match="unknown option"):
        open_dataset(f"text:{folder}", "text", colour="red")

    import datasets

    datasets.Dataset.from_dict({"content": ["hf one", "hf two"]}).save_to_disk(str(tmp_path / "hf"))
    hf = open_dataset(f"hf:{tmp_path / 'hf'}", "text", field="content")
    assert hf[1].data == "hf two"
    with pytest.raises(DataError, match="no column 'text'"):
        open_dataset(f"hf:{tmp_path / 'hf'}", "text")


def test_pydocs_is_real_deterministic_text() -> None:
    from sae_core.datasets import open_dataset

    a = open_dataset("pydocs", "text", limit=50)
    b = open_dataset("pydocs", "text", limit=50)
    assert len(a) == 50 and a.fingerprint() == b.fingerprint()
    text = " ".join(a[i].data for i in range(50))
    assert len(text) > 50 * 200 and " the " in text
    assert a[0].source.startswith("stdlib/")


def test_bad_model_errors(tmp_path: Path) -> None:
    from sae_core.protocols import AdapterRequest
    from sae_text.adapters.tlens import TLensAdapter

    with pytest.raises(SAEError, match="does not exist"):
        TLensAdapter(AdapterRequest(model=f"config:{tmp_path / 'nope.json'}", layers=["0"]))


def test_tlens_any_hook_point_hook_z_flattened(run_cli, tmp_path: Path, corpus: Path, tiny_config: Path) -> None:
    """hook_z (batch, pos, heads, d_head) is cached as n_heads * d_head per token and equals
    run_with_cache's values reshaped; several hooks of one width share a cache."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    hooks = ["blocks.1.attn.hook_z", "blocks.0.attn.hook_q", "blocks.0.hook_resid_mid"]
    path = _cache(run_cli, tmp_path, f"config:{tiny_config}", corpus, *[a for h in hooks for a in ("--hook", h)],
                  "--opt", f"tokenizer={minilm_dir()}", "--opt", "seed=3")
    reader = open_reader(path)
    assert reader.meta.layers == hooks and reader.meta.d_model == TINY_TLENS_CFG["n_heads"] * TINY_TLENS_CFG["d_head"]
    acts, index = reader.read_examples(0, reader.n_examples)
    torch.manual_seed(3)
    model = HookedTransformer(HookedTransformerConfig(**TINY_TLENS_CFG), tokenizer=AutoTokenizer.from_pretrained(minilm_dir()))
    tokens = torch.from_numpy(index["token"].astype(np.int64))
    _, cache = model.run_with_cache(tokens, attention_mask=(tokens != model.tokenizer.pad_token_id).long())
    keep = torch.from_numpy(index["valid"].astype(bool))
    for li, name in enumerate(hooks):
        ref = cache[name].reshape(*tokens.shape, -1)  # (batch, pos, n_heads * d_head) for hook_z / hook_q
        torch.testing.assert_close(acts[:, li][keep], ref[keep], rtol=1e-4, atol=1e-4)


def test_tlens_hook_widths_and_refusals(tmp_path: Path, tiny_config: Path) -> None:
    from sae_core.protocols import AdapterRequest
    from sae_text.adapters.tlens import TLensAdapter

    opts = {"tokenizer": str(minilm_dir())}
    model = f"config:{tiny_config}"
    mlp = TLensAdapter(AdapterRequest(model=model, layers=["blocks.0.mlp.hook_post"], options=opts))
    assert mlp.spec().d_model == TINY_TLENS_CFG["d_mlp"] and mlp.stop_at == 1
    result = TLensAdapter(AdapterRequest(model=model, layers=["blocks.1.attn.hook_result"], options=opts))
    assert result.d_model == TINY_TLENS_CFG["n_heads"] * TINY_TLENS_CFG["d_model"]  # the flag hook_result needs was switched on
    with pytest.raises(SAEError, match=r"'blocks\.0\.attn\.hook_pattern' does not give one vector per token"):
        TLensAdapter(AdapterRequest(model=model, layers=["blocks.0.attn.hook_pattern"], options=opts))
    with pytest.raises(SAEError, match=r"did you mean 'blocks\.1\.attn\.hook_z'"):
        TLensAdapter(AdapterRequest(model=model, layers=["blocks.1.attn.hook_zz"], options=opts))
    with pytest.raises(SAEError, match="hooks of different widths cannot share a cache"):
        TLensAdapter(AdapterRequest(model=model, layers=["0", "blocks.0.mlp.hook_post"], options=opts))
    with pytest.raises(SAEError, match="unknown --opt 'tokeniser'"):
        TLensAdapter(AdapterRequest(model=model, layers=["0"], options={"tokeniser": "x"}))
    names = TLensAdapter(AdapterRequest(model=model, layers=[], options=opts)).hook_names()
    assert {"blocks.0.attn.hook_z", "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post", "hook_embed"} <= set(names)
    assert not any(n.endswith(("hook_pattern", "hook_attn_scores")) for n in names)


def test_bridge_hook_list_and_unsupported_flags() -> None:
    """TransformerBridge (MiniLM): `sae hooks` lists its per-token hook points, with the
    flag-gated ones this model can turn on, and a hook whose flag it cannot support is refused."""
    from sae_core.protocols import AdapterRequest
    from sae_text.adapters.tlens import TLensAdapter

    adapter = TLensAdapter(AdapterRequest(model="minilm", layers=[]))
    names = adapter.hook_names()
    assert {"blocks.0.attn.hook_z", "blocks.5.mlp.hook_post", "blocks.2.hook_resid_post", "blocks.0.hook_mlp_in"} <= set(names)
    assert not any(n.endswith(("hook_pattern", "hook_attn_scores", "attn.hook_result")) for n in names)
    with pytest.raises(SAEError, match=r"needs set_use_attn_result\(True\), which this model does not support"):
        adapter._resolve_hook("blocks.0.attn.hook_result")
