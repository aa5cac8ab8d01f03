"""The ``hf`` adapter: plain transformers models read by forward hooks on module paths.

Tiny random models (a BERT with MiniLM's tokenizer, a GPT-2 with a word-level tokenizer) saved
with ``save_pretrained`` into tmp dirs, the real bundled MiniLM, and a Hub model served by the
local fake Hub (the network boundary) — every cache is checked against an independent forward.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.text_hf import HF_DOCS, gpt2_tokenizer
from sae_core.errors import SAEError
from sae_core.protocols import AdapterRequest
from sae_core.stores import open_reader
from sae_text.minilm import minilm_dir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(HF_DOCS))
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    tok = gpt2_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=3, n_head=4, n_positions=64,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _cache(run_cli, out: Path, model: str, corpus: Path, *extra: str) -> Path:
    code, stdout, err = run_cli("cache", "--adapter", "hf", "--model", model, "--data", f"text:{corpus}",
                                "--out", str(out), "--context-size", "16", "--batch-size", "3", "-q", *extra)
    assert code == 0, err
    return Path(stdout.strip().splitlines()[-1])


def _attention(index: np.ndarray, n_prefix: int, n_suffix: int) -> torch.Tensor:
    n_real = n_prefix + (index["position"] >= 0).sum(1) + n_suffix
    return torch.from_numpy(np.arange(index.shape[1])[None, :] < n_real[:, None]).long()


def test_minilm_cache_equals_hidden_states(run_cli, tmp_path: Path, corpus: Path) -> None:
    """The bundled MiniLM through plain transformers: layer 3 of the cache == hidden_states[4]."""
    from transformers import AutoModel

    path = _cache(run_cli, tmp_path, "minilm", corpus, "--layers", "3")
    reader = open_reader(path)
    meta = reader.meta
    assert meta.adapter == "hf" and meta.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta.layers == ["encoder.layer.3"] and meta.d_model == 384
    assert meta.extra["causal"] is False and meta.extra["loader"] == "AutoModel"
    acts, index = reader.read_examples(0, reader.n_examples)
    model = AutoModel.from_pretrained(minilm_dir()).eval()
    tokens = torch.from_numpy(index["token"].astype(np.int64))
    with torch.no_grad():
        hidden = model(input_ids=tokens, attention_mask=_attention(index, 1, 1), output_hidden_states=True).hidden_states
    keep = torch.from_numpy(index["valid"].astype(bool))
    torch.testing.assert_close(acts[:, 0][keep], hidden[4][keep], rtol=1e-4, atol=1e-4)
    assert (index["token"][:, 0] == 101).all() and not index["valid"][:, 0].any()  # [CLS], never trained on
    assert json.loads((path / "vocab.json").read_text())[101] == "[CLS]"
    doc1 = index["example"][:, 0] == 1  # a document spanning several windows, positions continuing
    pos = index["position"][doc1][index["valid"][doc1].astype(bool)]
    assert doc1.sum() > 1 and np.array_equal(pos, np.arange(len(pos)))


def test_causal_lm_hooks_bos_and_early_stop(tiny_gpt2: Path, corpus: Path) -> None:
    """GPT-2: BOS prepended (not valid), a block output, an MLP output and an MLP input (``:input``)
    in one forward equal a manual forward; nothing after the last hooked module runs."""
    from sae_core.datasets import open_dataset
    from sae_text.adapters.hf import HFAdapter
    from transformers import AutoModelForCausalLM

    adapter = HFAdapter(AdapterRequest(model=str(tiny_gpt2), layers=["0", "transformer.h.1.mlp", "transformer.h.1.mlp:input"],
                                       context_size=16))
    assert adapter.causal and adapter.model_class == "AutoModelForCausalLM"
    assert adapter.layer_names == ["transformer.h.0", "transformer.h.1.mlp", "transformer.h.1.mlp:input"]
    calls = []
    adapter.model.transformer.h[2].register_forward_hook(lambda *a: calls.append("h2"))
    dataset = open_dataset(f"text:{corpus}", "text")
    batches = list(adapter.iter_batches(dataset, batch_size=3))
    assert not calls, "the forward must stop after the last hooked module"
    acts = torch.cat([b.acts for b in batches])  # (rows, 3, 16, 32)
    tokens = np.concatenate([b.token_ids for b in batches]).astype(np.int64)
    valid = np.concatenate([b.valid for b in batches])
    assert (tokens[:, 0] == adapter.tokenizer.bos_token_id).all() and not valid[:, 0].any()

    ref = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    seen: dict[str, torch.Tensor] = {}
    ref.transformer.h[1].mlp.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out))
    ref.transformer.h[1].mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("in", a[0]))
    positions = np.concatenate([b.positions for b in batches])
    n_real = 1 + (positions >= 0).sum(1)
    attention = torch.from_numpy(np.arange(16)[None, :] < n_real[:, None]).long()
    with torch.no_grad():
        hidden = ref(input_ids=torch.from_numpy(tokens), attention_mask=attention, output_hidden_states=True).hidden_states
    keep = torch.from_numpy(valid)
    torch.testing.assert_close(acts[:, 0][keep], hidden[1][keep], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(acts[:, 1][keep], seen["out"][keep], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(acts[:, 2][keep], seen["in"][keep], rtol=1e-4, atol=1e-5)


def test_length_sorting_keeps_dataset_order(tiny_bert: Path, corpus: Path) -> None:
    """Sorting windows by length across batches changes the batches, not the rows."""
    from sae_core.datasets import open_dataset
    from sae_text.adapters.hf import HFAdapter

    dataset = open_dataset(f"text:{corpus}", "text")
    runs = {}
    for sort in ("1", "8"):
        adapter = HFAdapter(AdapterRequest(model=str(tiny_bert), layers=["1"], context_size=16,
                                           options={"sort_batches": sort}))
        runs[sort] = list(adapter.iter_batches(dataset, batch_size=2))
    a, b = (torch.cat([x.acts for x in runs[s]]) for s in ("1", "8"))
    ids = [np.concatenate([x.example_ids for x in runs[s]]) for s in ("1", "8")]
    assert np.array_equal(ids[0], ids[1]) and np.all(np.diff(ids[0]) >= 0)
    valid = torch.from_numpy(np.concatenate([x.valid for x in runs["1"]]))
    torch.testing.assert_close(a[:, 0][valid], b[:, 0][valid], rtol=1e-5, atol=1e-5)
    positions = np.concatenate([x.positions for x in runs["8"]])
    pad = torch.from_numpy(np.arange(16)[None, :] >= 2 + (positions >= 0).sum(1)[:, None])  # after [SEP]
    assert pad.any() and not b[:, 0][pad].any()  # padding is zeros, whatever batch it ran in
    sizes = [len(x.example_ids) for x in runs["8"]]
    assert sizes[:-1] == [2] * (len(sizes) - 1)


def test_splice_eval_identity_and_zero(tiny_gpt2: Path, tiny_bert: Path, corpus: Path, run_cli, tmp_path: Path) -> None:
    """An identity splice leaves the model's output unchanged; zero ablation does not."""
    from sae_text.adapters.hf import HFAdapter

    for model, kind in ((tiny_gpt2, "lm_ce"), (tiny_bert, "embedding_cosine")):
        path = _cache(run_cli, tmp_path / kind, str(model), corpus, "--layers", "1")
        reader = open_reader(path)
        _, index = reader.read_examples(0, reader.n_examples)
        adapter = HFAdapter(AdapterRequest(model=str(model), layers=reader.meta.layers, context_size=16))
        mask = index["valid"].astype(bool)
        calls: list[int] = []

        def identity(x: torch.Tensor, calls: list[int] = calls) -> torch.Tensor:
            calls.append(len(x))
            return x

        forwards: list[int] = []
        adapter.model.register_forward_hook(lambda *a, forwards=forwards: forwards.append(1))
        result = adapter.splice_eval(index, mask, reader.meta.layers[0], identity, batch_rows=2)
        assert result["kind"] == kind and sum(calls) == mask.sum()
        chunks = -(-len(index) // 2)
        assert len(forwards) == 3 * chunks
        again = adapter.splice_eval(index, mask, reader.meta.layers[0], identity, batch_rows=2)
        assert again == result and len(forwards) == 4 * chunks  # the next SAE reruns only the spliced model
        if kind == "lm_ce":
            assert result["ce_spliced"] == pytest.approx(result["ce_clean"], abs=1e-5)
            assert result["ce_zero_ablated"] != pytest.approx(result["ce_clean"], abs=1e-3)
        else:
            assert result["embedding_cosine"] == pytest.approx(1.0, abs=1e-5)
            assert result["embedding_cosine_zero_ablated"] < 0.999


def test_hf_runs_with_saes_attached(tiny_gpt2: Path, tiny_bert: Path, corpus: Path, run_cli, tmp_path: Path) -> None:
    """The hf adapter implements the running protocol: recording equals encode of the cached
    activations on the SAE's tokens, no edit with the error kept is bit-exact, a steer moves the
    block's output by exactly s·W_dec[i], and downstream through run_with_hooks (KL, standard
    errors) gives the same CE / cosine as the adapter's own splice_eval."""
    from sae_core import HookedModel, SAEHook, Steer, analyse_run, find_checkpoints
    from sae_core.inference.splice_eval import splice_metrics
    from sae_text.adapters.hf import HFAdapter
    from sae_text.adapters.hf_model import find_blocks

    for model, kind in ((tiny_gpt2, "lm_ce"), (tiny_bert, "embedding_cosine")):
        path = _cache(run_cli, tmp_path / kind, str(model), corpus, "--layers", "1")
        code, _, err = run_cli("train", "--data", str(path), "--out", str(tmp_path / kind / "run"), "--arch", "topk",
                               "--k", "4", "--exp-factor", "2", "--steps", "10", "--batch-size", "16", "-q")
        assert code == 0, err
        (ckpt,) = find_checkpoints(tmp_path / kind / "run")
        hooked, sae = HookedModel.from_checkpoint(ckpt)
        adapter = hooked.adapter
        assert isinstance(adapter, HFAdapter) and HFAdapter.supports("run_with_hooks")
        reader = open_reader(path)
        acts, index = reader.read_examples(0, reader.n_examples)
        inputs = adapter.cached_inputs(index)
        rec = hooked.run(inputs, SAEHook(sae))
        keep = index["valid"].astype(bool)
        torch.testing.assert_close(rec.features[sae.cfg.name].dense(), sae.encode(acts[:, 0][torch.from_numpy(keep)]),
                                   rtol=1e-4, atol=1e-5)
        same = hooked.run(inputs, SAEHook(sae, splice=True, keep_error=True), output=True).output
        clean = rec.output
        assert torch.equal(same.logits if kind == "lm_ce" else same.embedding,
                           clean.logits if kind == "lm_ce" else clean.embedding)
        seen: list[torch.Tensor] = []
        _, blocks = find_blocks(adapter.model)
        assert reader.meta.layers[0].endswith(".1")

        def grab(m, args, kwargs, seen=seen):  # the input of block 2: block 1's output after the hooks
            seen.append((args[0] if args else kwargs["hidden_states"]).clone())

        handle = blocks[2].register_forward_pre_hook(grab, with_kwargs=True)
        hooked.run(inputs, SAEHook(sae, record=False))
        hooked.run(inputs, SAEHook(sae, edits=[Steer(3, 2.0)], record=False))
        handle.remove()
        delta = seen[1] - seen[0]  # (b, T, d): block 1's output, steered minus clean
        torch.testing.assert_close(delta[torch.from_numpy(keep)], (2.0 * sae.W_dec[3]).expand(int(keep.sum()), -1),
                                   rtol=1e-5, atol=1e-5)
        assert delta[torch.from_numpy(~keep)].abs().max() == 0
        res = analyse_run(ckpt, only=["downstream"], options={"split": "all"}, progress=False)[ckpt.name]["downstream"]
        assert res["kind"] == kind and res["cache_rel_error"] < 1e-5 and res["n_rows"] == reader.n_examples

        def replace(x: torch.Tensor, sae=sae) -> torch.Tensor:
            with torch.no_grad():
                return sae(x)

        legacy = HFAdapter(AdapterRequest(model=str(model), layers=reader.meta.layers, context_size=16)).splice_eval(
            index, keep, reader.meta.layers[0], replace, batch_rows=8)
        if kind == "lm_ce":
            for key in ("ce_clean", "ce_spliced", "ce_zero_ablated"):
                assert res[key] == pytest.approx(legacy[key], rel=1e-5), key
            assert res["kl_spliced"] > 0 and res["ce_clean_se"] > 0
            gen = hooked.generate("the quick", SAEHook(sae, edits=[Steer(3, 50.0)]), max_new_tokens=4)
            assert len(gen.token_ids) <= 4
        else:
            assert res["embedding_cosine"] == pytest.approx(legacy["embedding_cosine"], abs=1e-5)
            assert res["embedding_cosine_se"] is not None
        direct = splice_metrics(adapter, sae, reader.meta.layers[0], index, acts[:, 0], kinds=["token"] * index.shape[1],
                                tokens="all", batch_rows=8)
        assert direct["cache_rel_error"] < 1e-5


def test_hook_errors_are_one_line_and_early(run_cli, tmp_path: Path, corpus: Path, tiny_bert: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    base = ("cache", "--adapter", "hf", "--model", str(tiny_bert), "--data", f"text:{corpus}", "--out", str(tmp_path), "-q")
    code, _, err = run_cli(*base, "--hook", "encoder.layers.1")
    assert code == 1 and "unknown module 'encoder.layers.1': did you mean 'encoder.layer.1'" in err
    code, _, err = run_cli(*base, "--layers", "3")
    assert code == 1 and "out of range: encoder.layer has 3 blocks" in err
    code, _, err = run_cli(*base, "--hook", "pooler")
    assert code == 1 and "does not give one vector per token" in err
    code, _, err = run_cli(*base, "--hook", "encoder.layer.1:output2")
    assert code == 1 and "unknown port" in err
    assert "Traceback" not in err
    import sae_text.adapters.hf as hf

    monkeypatch.setattr(hf, "load", lambda *a, **k: pytest.fail("options must be checked before the model loads"))
    code, _, err = run_cli(*base, "--layers", "1", "--opt", "sort_batch=4")
    assert code == 1 and "unknown --opt 'sort_batch' (did you mean 'sort_batches'?)" in err
    code, _, err = run_cli(*base, "--layers", "1", "--opt", "dtype=fp8")
    assert code == 1 and "--opt dtype=" in err
    code, _, err = run_cli(*base, "--layers", "1", "--opt", "random_crop=maybe")
    assert code == 1 and "expects true or false" in err
    code, _, err = run_cli("cache", "--adapter", "hf", "--model", str(tiny_bert), "--data", f"hf:{tmp_path / 'none.jsonl'}",
                           "--out", str(tmp_path), "--layers", "1", "-q")
    assert code == 1 and "no such file" in err  # the dataset is opened before the model loads
    code, _, err = run_cli("cache", "--adapter", "hf", "--model", str(tmp_path / "nope"), "--data", f"text:{corpus}",
                           "--out", str(tmp_path), "--layers", "1", "-q")
    assert code == 1 and "neither a model directory nor a Hugging Face id" in err


def test_hooks_command_lists_per_token_modules(run_cli, tiny_bert: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("hooks", "--adapter", "hf", "--model", str(tiny_bert))
    assert code == 0, err
    names = out.split()
    assert {"encoder.layer.0", "encoder.layer.2.output", "encoder.layer.1.intermediate", "embeddings"} <= set(names)
    assert "pooler" not in names  # (batch, d): not one vector per token
    code, out, _ = run_cli("hooks", "--adapter", "hf", "--model", str(tiny_bert), "--match", "intermediate.dense")
    assert out.split() == [f"encoder.layer.{i}.intermediate.dense" for i in range(3)]
    code, _, err = run_cli("hooks", "--adapter", "mlp", "--model", "x")  # the example plugin's adapter
    assert code == 1 and "adapter 'mlp' cannot list its hooks" in err


def test_hub_model_through_the_hub_client(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub id goes through transformers' real download path, served by the local fake Hub."""
    import huggingface_hub.constants as c
    from helpers.fake_hub import FakeHub
    from sae_text.adapters.hf import HFAdapter

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    with FakeHub() as hub:
        monkeypatch.setattr(c, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        hub.repos["someone/tiny-bert"] = {"files": {p.name: p.read_bytes() for p in tiny_bert.iterdir() if p.is_file()},
                                          "sha": "a" * 40, "private": False}
        adapter = HFAdapter(AdapterRequest(model="someone/tiny-bert", layers=["-1"], context_size=16))
        assert adapter.model_id == "someone/tiny-bert" and adapter.layer_names == ["encoder.layer.2"]
        assert any(path.endswith("/model.safetensors") for _, path in hub.requests)
        with pytest.raises(SAEError, match="could not load the config of 'someone/missing'"):
            HFAdapter(AdapterRequest(model="someone/missing", layers=["0"]))


def test_find_blocks_takes_the_longest_top_level_list() -> None:
    """The stack of blocks is the longest ModuleList that is not inside another list's element:
    a MoE block's 8 experts never beat 3 layers, a 2-element list of heads never wins either."""
    from sae_text.adapters.hf_model import find_blocks
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.experts = nn.ModuleList(nn.Linear(2, 2) for _ in range(8))

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleList(nn.Linear(2, 2) for _ in range(2))
            self.decoder = nn.Module()
            self.decoder.layers = nn.ModuleList(Block() for _ in range(3))

    path, blocks = find_blocks(Model())
    assert path == "decoder.layers" and len(blocks) == 3
    with pytest.raises(SAEError, match="no list of blocks"):
        find_blocks(nn.Linear(2, 2))


def test_encoder_of_an_encoder_decoder(tmp_path: Path, corpus: Path) -> None:
    """T5 through AutoModel: the forward stops once the hooked encoder block has run, before the
    decoder (which would need decoder inputs) — any model works as far as its hooks reach."""
    from sae_core.datasets import open_dataset
    from sae_text.adapters.hf import HFAdapter
    from transformers import AutoTokenizer, T5Config, T5Model

    torch.manual_seed(0)
    T5Model(T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(tmp_path)
    adapter = HFAdapter(AdapterRequest(model=str(tmp_path), layers=["1"], context_size=16))
    assert adapter.layer_names == ["encoder.block.1"] and adapter.d_model == 32 and not adapter.causal
    batch = next(adapter.iter_batches(open_dataset(f"text:{corpus}", "text"), batch_size=4))
    assert batch.acts.shape == (4, 1, 16, 32)
