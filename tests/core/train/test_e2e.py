"""End-to-end training (``--e2e``): the loss and every gradient of a bank of SAEs spliced into a
tiny model equal independent per-SAE references (plain forward hooks on a separately loaded
model, the SAE written out by hand), for a causal LM's KL (hf GPT-2, tlens HookedTransformer)
and an encoder's final hidden states (hf BERT); and a live run with --e2e trains, logs the
term and resumes exactly."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.live import TINY_TLENS, assert_same_saes
from helpers.text_hf import HF_DOCS, gpt2_tokenizer
from sae_core.plugins import get_component
from sae_core.protocols import AdapterRequest

SCALE = 1.7
KS = [2, 3, 5]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("e2e-corpus") / "docs.txt"
    path.write_text("\n\n".join(HF_DOCS * 3))
    return path


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("e2e_gpt2")
    tok = gpt2_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=3, n_head=4, n_positions=64,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    from sae_text.minilm import minilm_dir
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("e2e_bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(path)
    return path


class _Source:
    """The parts of a LiveSource that EndToEnd uses."""

    live = True

    def __init__(self, adapter: Any) -> None:
        from sae_core.protocols.metadata import CacheMetadata

        spec = adapter.spec()
        self.adapter = adapter
        self.meta = CacheMetadata(adapter=spec.adapter, model=spec.model, layers=spec.layers, d_model=spec.d_model,
                                  dtype="float32", tokens_per_example=spec.tokens_per_example,
                                  token_kinds=spec.token_kinds, dataset={})
        self._lock = threading.RLock()
        self.e2e_batch = None

    def positions(self, tokens: str) -> np.ndarray:
        return np.arange(self.meta.tokens_per_example)


def _rows(adapter: Any, corpus: Path, n: int = 4) -> np.ndarray:
    from sae_core.datasets import open_dataset

    batch = next(iter(adapter.iter_batches(open_dataset(f"text:{corpus}", "text"), batch_size=8)))
    index = batch.index_records()
    # rows of different lengths (padding), the first shifted so masks differ between rows
    return index[[0, 1, 2, len(index) - 1][:n]]


def _bank(d_in: int, seed: int = 0) -> Any:
    arch = get_component("architecture", "topk").factory
    hypers = [arch.make_hyper({"k": k}, 48) for k in KS]
    bank = arch.build_bank(d_in, 48, hypers, generator=[torch.Generator().manual_seed(seed + i) for i in range(3)])
    with torch.no_grad():  # away from the init's symmetries
        bank.b_dec.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + 9))
        bank.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 10))
    return bank


def _reference_sae(bank: Any, i: int) -> tuple[dict[str, torch.Tensor], Any]:
    """SAE ``i`` of the bank as plain leaf tensors and a hand-written TopK forward."""
    p = {k: getattr(bank, k)[i].detach().clone().requires_grad_() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}

    def sae(h: torch.Tensor) -> torch.Tensor:  # raw activations (m, d) -> raw reconstruction
        x = h * SCALE
        pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
        vals, idx = pre.topk(KS[i], dim=-1)
        f = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        return (f @ p["W_dec"] + p["b_dec"]) / SCALE

    return p, sae


def _splice_hook(sae: Any, mask: torch.Tensor):
    def hook(module: Any, args: Any, out: Any) -> Any:
        h = out[0] if isinstance(out, tuple) else out
        new = h.clone()
        new[mask] = sae(h[mask])
        return (new, *out[1:]) if isinstance(out, tuple) else new

    return hook


def _check(bank: Any, loss: torch.Tensor, reference: Any) -> None:
    """Bank loss (n,) and gradients against ``reference(i) -> (loss_i, params_i)``."""
    loss.sum().backward()
    for i in range(bank.n):
        ref_loss, params = reference(i)
        ref_loss.backward()
        torch.testing.assert_close(loss[i].detach(), ref_loss.detach(), rtol=1e-5, atol=1e-7)
        for k, v in params.items():
            assert v.grad is not None and v.grad.abs().sum() > 0, k
            torch.testing.assert_close(getattr(bank, k).grad[i], v.grad, rtol=1e-4, atol=1e-7, msg=f"SAE {i} {k}")


def _kl(clean: torch.Tensor, spliced: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    kl = torch.nn.functional.kl_div(torch.log_softmax(spliced, -1), torch.log_softmax(clean, -1), log_target=True,
                                    reduction="none").sum(-1)
    return (kl * target).sum() / target.sum()


def test_e2e_kl_gradients_match_per_sae_references_hf_gpt2(gpt2_dir: Path, corpus: Path) -> None:
    from sae_core.train.live.e2e import EndToEnd
    from sae_text.adapters.hf import HFAdapter
    from transformers import AutoModelForCausalLM

    adapter = HFAdapter(AdapterRequest(model=str(gpt2_dir), layers=["1"], context_size=16))
    rows = _rows(adapter, corpus)
    e2e = EndToEnd(_Source(adapter), mode="kl", coeff=1.0, layer=0, tokens="token")
    bank = _bank(32)
    loss = e2e.loss(bank, SCALE, rows)
    assert (loss > 0).all()

    model = AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()  # independent of the adapter's copy
    tokens = torch.from_numpy(rows["token"].astype(np.int64))
    n_real = 1 + (rows["position"] >= 0).sum(1)  # BOS, then the document's tokens
    attention = torch.from_numpy(np.arange(16)[None, :] < n_real[:, None]).long()
    mask = torch.from_numpy(rows["valid"].astype(bool))
    target = torch.from_numpy(rows["position"] >= 0).float()
    with torch.no_grad():
        clean = model(input_ids=tokens, attention_mask=attention).logits

    def reference(i: int):
        params, sae = _reference_sae(bank, i)
        handle = model.transformer.h[1].register_forward_hook(_splice_hook(sae, mask))
        try:
            spliced = model(input_ids=tokens, attention_mask=attention).logits
        finally:
            handle.remove()
        return _kl(clean, spliced, target), params

    _check(bank, loss, reference)


def test_e2e_hidden_mse_gradients_match_per_sae_references_hf_bert(bert_dir: Path, corpus: Path) -> None:
    from sae_core.train.live.e2e import EndToEnd
    from sae_text.adapters.hf import HFAdapter
    from transformers import AutoModel

    adapter = HFAdapter(AdapterRequest(model=str(bert_dir), layers=["1"], context_size=16))
    rows = _rows(adapter, corpus)
    with pytest.raises(Exception, match="not a causal LM"):
        EndToEnd(_Source(adapter), mode="kl", coeff=1.0, layer=0, tokens="token").loss(_bank(32), SCALE, rows)
    e2e = EndToEnd(_Source(adapter), mode="mse", coeff=0.5, layer=0, tokens="token")
    bank = _bank(32, seed=5)
    loss = e2e.loss(bank, SCALE, rows)

    model = AutoModel.from_pretrained(bert_dir).eval()
    tokens = torch.from_numpy(rows["token"].astype(np.int64))
    n_real = 2 + (rows["position"] >= 0).sum(1)  # [CLS] ... [SEP]
    attention = torch.from_numpy(np.arange(16)[None, :] < n_real[:, None]).long()
    mask = torch.from_numpy(rows["valid"].astype(bool))
    target = torch.from_numpy(rows["position"] >= 0).float()
    with torch.no_grad():
        clean = model(input_ids=tokens, attention_mask=attention).last_hidden_state

    def reference(i: int):
        params, sae = _reference_sae(bank, i)
        handle = model.encoder.layer[1].register_forward_hook(_splice_hook(sae, mask))
        try:
            spliced = model(input_ids=tokens, attention_mask=attention).last_hidden_state
        finally:
            handle.remove()
        err = ((spliced - clean).pow(2).sum(-1) * target).sum() / (clean.pow(2).sum(-1) * target).sum()
        return 0.5 * err, params

    _check(bank, loss, reference)


def test_e2e_kl_gradients_match_per_sae_references_tlens(tmp_path: Path, corpus: Path) -> None:
    from sae_core.train.live.e2e import EndToEnd
    from sae_text.adapters.tlens import TLensAdapter
    from sae_text.minilm import minilm_dir

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({**TINY_TLENS, "attention_dir": "causal"}))
    adapter = TLensAdapter(AdapterRequest(model=f"config:{cfg}", layers=["blocks.0.hook_resid_post"], context_size=16,
                                          options={"tokenizer": str(minilm_dir())}))
    rows = _rows(adapter, corpus)
    e2e = EndToEnd(_Source(adapter), mode="kl", coeff=2.0, layer=0, tokens="token")
    bank = _bank(32, seed=11)
    loss = e2e.loss(bank, SCALE, rows)

    model = adapter.model
    tokens = torch.from_numpy(rows["token"].astype(np.int64))
    attention = torch.from_numpy(adapter.attention_from_index(rows)).long()
    mask = torch.from_numpy(rows["valid"].astype(bool))
    target = torch.from_numpy(rows["position"] >= 0).float()
    with torch.no_grad():
        clean = model(tokens, attention_mask=attention)

    def reference(i: int):
        params, sae = _reference_sae(bank, i)

        def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            new = act.clone()
            new[mask] = sae(act[mask])
            return new

        spliced = model.run_with_hooks(tokens, attention_mask=attention, fwd_hooks=[("blocks.0.hook_resid_post", hook)])
        return 2.0 * _kl(clean, spliced, target), params

    _check(bank, loss, reference)


def test_live_e2e_training_runs_logs_and_resumes_exactly(run_cli, gpt2_dir: Path, corpus: Path, tmp_path: Path) -> None:
    """A live sweep (two k, one bank) with --e2e kl: the term is logged per SAE, it falls as the
    SAEs learn, and a run stopped mid-way resumes to the same SAEs (the same rows per step)."""
    from sae_core.train import TrainConfig, run_training

    args = ("train", "--adapter", "hf", "--model", str(gpt2_dir), "--layers", "1", "--data", f"text:{corpus}",
            "--context-size", "16", "--model-batch-size", "4", "--batch-size", "32", "--d-sae", "64",
            "--buffer-tokens", "128", "--e2e", "kl", "--e2e-coeff", "4", "--e2e-rows", "3", "--log-every", "5",
            "--lr", "3e-3", "--steps", "30", "--checkpoint-every", "4", "-q")
    sweep = tmp_path / "grid.toml"
    sweep.write_text("[sae]\nk = [4, 8]\n")
    code, _, err = run_cli(*args, "--sweep", str(sweep), "--out", str(tmp_path / "a"))
    assert code == 0, err
    lines = [json.loads(x) for x in (tmp_path / "a" / "topk-k4" / "metrics.jsonl").read_text().splitlines()]
    assert all("e2e" in r for r in lines)
    assert lines[-1]["e2e"] < lines[0]["e2e"]
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["train"]["e2e"] == "kl" and cfg["train"]["e2e_rows"] == 3
    # stopped after 9 steps, resumed
    config = TrainConfig.from_json({**cfg, "out": str(tmp_path / "b")})
    run_training(config, progress=False, stop_after=9)
    resumed = run_training(TrainConfig.from_json(json.loads((tmp_path / "b" / "config.json").read_text())),
                           progress=False, resume=True)
    assert_same_saes(tmp_path / "a", resumed)
    code, _, err = run_cli("train", "--data", "x", "--out", str(tmp_path / "c"), "--e2e", "kl", "-q")
    assert code == 1 and "--e2e is for live training" in err


def test_e2e_trains_jumprelu_threshold_through_its_straight_through_estimator(gpt2_dir: Path, corpus: Path) -> None:
    """JumpReLU spliced into a tiny GPT-2 (--e2e kl): every parameter's gradient, the threshold θ
    included, equals a hand-written reference: autograd through the model gives ∂L/∂f at the
    spliced codes f = pre·H(pre − θ), and ∂L/∂θ_j = Σ_tokens ∂L/∂f_j · (−θ_j/ε)·1[|pre_j − θ_j| < ε/2]
    (the paper's pseudo-derivative), written out here without the library's estimator."""
    from sae_core.train.live.e2e import EndToEnd
    from sae_text.adapters.hf import HFAdapter
    from transformers import AutoModelForCausalLM

    adapter = HFAdapter(AdapterRequest(model=str(gpt2_dir), layers=["1"], context_size=16))
    rows = _rows(adapter, corpus)
    e2e = EndToEnd(_Source(adapter), mode="kl", coeff=1.0, layer=0, tokens="token")
    arch = get_component("architecture", "jumprelu").factory
    eps = [0.8, 1.5]
    hypers = [arch.make_hyper({"bandwidth": b, "init_threshold": 0.0}, 48) for b in eps]
    bank = arch.build_bank(32, 48, hypers, generator=[torch.Generator().manual_seed(i) for i in range(2)])
    with torch.no_grad():
        bank.b_dec.normal_(0, 0.3, generator=torch.Generator().manual_seed(9))
        bank.threshold.uniform_(0.05, 0.6, generator=torch.Generator().manual_seed(10))
    loss = e2e.loss(bank, SCALE, rows)
    assert (loss > 0).all()

    model = AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    tokens = torch.from_numpy(rows["token"].astype(np.int64))
    n_real = 1 + (rows["position"] >= 0).sum(1)
    attention = torch.from_numpy(np.arange(16)[None, :] < n_real[:, None]).long()
    mask = torch.from_numpy(rows["valid"].astype(bool))
    target = torch.from_numpy(rows["position"] >= 0).float()
    with torch.no_grad():
        clean = model(input_ids=tokens, attention_mask=attention).logits

    def reference(i: int):
        p = {k: getattr(bank, k)[i].detach().clone().requires_grad_() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
        theta = bank.threshold[i].detach().clone()
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []

        def sae(h: torch.Tensor) -> torch.Tensor:
            pre = (h * SCALE - p["b_dec"]) @ p["W_enc"] + p["b_enc"]  # (m, d_sae)
            f = pre * (pre > theta)  # exact gradient to pre where active (and to W_enc, b_enc, b_dec)
            f.retain_grad()
            seen.append((pre.detach(), f))
            return (f @ p["W_dec"] + p["b_dec"]) / SCALE

        handle = model.transformer.h[1].register_forward_hook(_splice_hook(sae, mask))
        try:
            spliced = model(input_ids=tokens, attention_mask=attention).logits
        finally:
            handle.remove()
        ref_loss = _kl(clean, spliced, target)
        ref_loss.backward(retain_graph=True)
        ((pre, f),) = seen
        kernel = ((pre - theta).abs() < eps[i] / 2).float()
        grad_theta = (f.grad * (-theta / eps[i]) * kernel).sum(0)  # (d_sae,)
        torch.testing.assert_close(bank.threshold.grad[i], grad_theta, rtol=1e-4, atol=1e-8, msg=f"SAE {i} θ")
        assert (grad_theta != 0).sum() > 10  # θ really learns from the spliced model
        return ref_loss, p

    loss.sum().backward()
    assert bank.threshold.grad is not None
    for i in range(bank.n):
        ref_loss, params = reference(i)
        torch.testing.assert_close(loss[i].detach(), ref_loss.detach(), rtol=1e-5, atol=1e-7)
        for k, v in params.items():
            assert v.grad is not None and v.grad.abs().sum() > 0, k
            torch.testing.assert_close(getattr(bank, k).grad[i], v.grad, rtol=1e-4, atol=1e-7, msg=f"SAE {i} {k}")
