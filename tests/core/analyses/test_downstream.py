"""The `downstream` analysis (SAE spliced into the model): CE loss recovered on a tiny
HookedTransformer against manual hooks, the sentence-embedding cosine of the real MiniLM, the image
embedding cosine of tiny open_clip / timm ViTs (only the trained token kind replaced, both block
layouts), perfect reconstructions, skips and errors."""

from __future__ import annotations

import json
from pathlib import Path

import helpers.shared_runs as shared_runs
import numpy as np
import pytest
import torch
from helpers.shared_runs import TINY_LM, WORDS, cache_and_train
from sae_core.analyses.runner import analyse_run
from sae_core.checkpoint import find_checkpoints, load_sae
from sae_core.stores import open_reader
from sae_text.minilm import minilm_dir


def _cli():
    return shared_runs.cli()


def _downstream(run: Path, **options: str) -> dict:
    (ckpt,) = find_checkpoints(run)
    return analyse_run(run, only=["downstream"], options=options, progress=False)[ckpt.name]["downstream"]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> tuple[Path, Path]:
    return shared_runs.lm_run(tmp_path_factory)


def test_lm_ce_matches_manual_hooks(lm_run) -> None:
    """`sae analyze --only downstream` writes downstream.json whose CE and KL numbers equal a
    manual computation: hooks on the same held-out windows, CE targets = document tokens only, KL
    at document-token positions; standard errors over windows."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    cache, run = lm_run
    code, out, err = _cli()("analyze", str(run), "--only", "downstream", "-q",
                            "--option", "split=tail", "--option", "heldout_frac=0.5", "--option", "downstream_batch=3")
    assert code == 0, err
    (ckpt,) = find_checkpoints(run)
    res = json.loads((ckpt / "downstream.json").read_text())
    assert json.loads(out)[ckpt.name]["downstream"] == res
    assert res["kind"] == "lm_ce" and res["layer"] == "blocks.0.hook_resid_post"
    lo, hi = res["rows"]
    reader = open_reader(cache)
    assert hi == reader.n_examples and lo == max(hi - reader.n_examples // 2, hi - 32)
    assert res["cache_rel_error"] < 1e-5  # the re-created model is the cached one

    torch.manual_seed(3)
    model = HookedTransformer(HookedTransformerConfig(**TINY_LM), tokenizer=AutoTokenizer.from_pretrained(minilm_dir()))
    model.eval()
    _, index = reader.read_examples(lo, hi, layers=[0])
    tokens = torch.from_numpy(index["token"].astype(np.int64))
    tok = model.tokenizer
    attention = (tokens != tok.pad_token_id).long()
    spliced_at = torch.from_numpy(index["valid"].astype(bool))
    sae = load_sae(ckpt)
    targets = tokens[:, 1:]
    scored = ~torch.isin(targets, torch.tensor([tok.cls_token_id, tok.sep_token_id, tok.pad_token_id]))
    doc = ~torch.isin(tokens, torch.tensor([tok.cls_token_id, tok.sep_token_id, tok.pad_token_id]))
    logp = {}

    def ce(mode: str) -> float:
        def hook(act, hook):
            act = act.clone()
            act[spliced_at] = sae(act[spliced_at]) if mode == "spliced" else 0.0
            return act

        hooks = [] if mode == "clean" else [("blocks.0.hook_resid_post", hook)]
        with torch.no_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks, attention_mask=attention)
        logp[mode] = torch.log_softmax(logits, -1)
        return float(torch.nn.functional.cross_entropy(logits[:, :-1][scored], targets[scored]))

    ref = {m: ce(m) for m in ("clean", "spliced", "zero")}
    assert res["n_targets"] == int(scored.sum())
    for mode, key in (("clean", "ce_clean"), ("spliced", "ce_spliced"), ("zero", "ce_zero_ablated")):
        assert abs(res[key] - ref[mode]) < 1e-4, (key, res[key], ref[mode])
    recovered = (ref["zero"] - ref["spliced"]) / (ref["zero"] - ref["clean"])
    assert abs(res["ce_loss_recovered"] - recovered) < 1e-3
    for mode, key in (("spliced", "kl_spliced"), ("zero", "kl_zero_ablated")):
        kl = torch.nn.functional.kl_div(logp[mode], logp["clean"], log_target=True, reduction="none").sum(-1)  # (n, T)
        assert res[key] == pytest.approx(float(kl[doc].mean()), rel=1e-4), key
    assert res["n_kl_positions"] == int(doc.sum())
    # the standard error is over windows (tokens of a window are correlated): delete-one-window jackknife
    nll = -logp["clean"][:, :-1].gather(-1, targets[..., None])[..., 0] * scored  # (n, T-1)
    sums, counts = nll.sum(1).double(), scored.sum(1).double()
    loo = (sums.sum() - sums) / (counts.sum() - counts)
    m = len(sums)
    assert res["ce_clean_se"] == pytest.approx(float(((m - 1) / m * ((loo - loo.mean()) ** 2).sum()).sqrt()), rel=1e-4)


def test_token_budget_picks_the_last_rows(lm_run) -> None:
    """downstream_tokens: the shortest tail of the held-out rows holding that many tokens the SAE
    reads; downstream_rows caps it."""
    cache, run = lm_run
    reader = open_reader(cache)
    _, index = reader.read_examples(0, reader.n_examples, layers=[0])
    per_row = index["valid"].sum(1)
    res = _downstream(run, split="tail", downstream_tokens="40")
    lo, hi = res["rows"]
    assert hi == reader.n_examples and per_row[lo:].sum() >= 40 > per_row[lo + 1 :].sum()
    assert res["n_spliced_tokens"] == per_row[lo:].sum() and res["ce_clean_se"] > 0
    assert _downstream(run, split="tail", downstream_tokens="100000", downstream_rows="3")["rows"] == [hi - 3, hi]


def test_default_rows_are_the_validation_examples(lm_run, tmp_path: Path) -> None:
    """Without ``--option split=`` downstream reads the SAE's validation examples (cfg.json
    ``val``): every window of those examples, not consecutive rows, read through read_rows; the
    numbers are the splice metrics of exactly those rows."""
    import shutil

    from sae_core.inference.loading import adapter_for_cache
    from sae_core.inference.splice_eval import splice_metrics
    from sae_core.validation_split import ExampleSplit, Selection

    cache, run = lm_run
    ckpt = tmp_path / "val30"
    shutil.copytree(find_checkpoints(run)[0], ckpt)
    cfg = json.loads((ckpt / "cfg.json").read_text())
    cfg["val"] = {"fraction": 0.3, "seed": 0, "tokens": None}
    (ckpt / "cfg.json").write_text(json.dumps(cfg))
    reader = open_reader(cache)
    val = reader.rows(Selection(ExampleSplit(0.3, 0), "val"))
    assert len(val) > 2 and (np.diff(val) > 1).any()  # a real split: not one block of rows
    res = analyse_run(ckpt, only=["downstream"], options={"downstream_tokens": "100000"}, progress=False)["val30"]["downstream"]
    assert res["split"] == "val" and res["n_rows"] == len(val) and res["rows"] == [int(val[0]), int(val[-1]) + 1]
    parts = [reader.read_examples(int(r), int(r) + 1, layers=[0]) for r in val]
    acts, index = torch.cat([a for a, _ in parts]), np.concatenate([i for _, i in parts])
    assert res["n_spliced_tokens"] == int(index["valid"].sum())
    ref = splice_metrics(adapter_for_cache(reader.meta), load_sae(ckpt), res["layer"], index, acts[:, 0],
                         kinds=list(reader.meta.token_kinds), tokens="all", batch_rows=8)
    for key in ("ce_clean", "ce_spliced", "ce_zero_ablated", "kl_spliced", "ce_clean_se"):
        assert res[key] == pytest.approx(ref[key], rel=1e-6), key
    with_budget = analyse_run(ckpt, only=["downstream"], options={"downstream_tokens": "20"}, progress=False)
    few = with_budget["val30"]["downstream"]
    assert few["n_rows"] < len(val) and few["rows"][1] == int(val[-1]) + 1  # the last validation rows


def _perfect_downstream(run: Path, tmp_path: Path, **options: str) -> dict:
    """downstream.json of an SAE that reconstructs exactly, on the run's cache and layer."""
    from helpers.inference import perfect_checkpoint

    ckpt = perfect_checkpoint(find_checkpoints(run)[0], tmp_path / "perfect")
    return analyse_run(ckpt, only=["downstream"], options=options, progress=False)["perfect"]["downstream"]


def test_perfect_reconstruction_recovers_all(lm_run, tmp_path: Path) -> None:
    _, run = lm_run
    res = _perfect_downstream(run, tmp_path, heldout_frac="0.5")
    assert res["ce_spliced"] == pytest.approx(res["ce_clean"], abs=1e-6)
    assert res["kl_spliced"] == pytest.approx(0.0, abs=1e-7) and res["kl_zero_ablated"] > 1e-3
    assert res["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-6)
    assert res["ce_zero_ablated"] != pytest.approx(res["ce_clean"], abs=1e-3)


def test_bridged_causal_lm_ce_matches_transformers(tmp_path: Path) -> None:
    """A causal LM through TransformerBridge (a local tiny GPT-2 directory): the CE numbers equal a
    plain transformers forward with a hook on the block's output."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=30522, n_positions=64)).save_pretrained(tmp_path / "gpt")
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(tmp_path / "gpt")
    rng = np.random.default_rng(1)
    (tmp_path / "docs.txt").write_text("\n\n".join(" ".join(rng.choice(WORDS, 20)) for _ in range(8)))
    cache, run = cache_and_train(tmp_path, ["--adapter", "tlens", "--model", str(tmp_path / "gpt"), "--layers", "0",
                                             "--data", f"text:{tmp_path / 'docs.txt'}", "--context-size", "16"],
                                  "--k", "4", "--batch-size", "32")
    res = _downstream(run, split="tail", heldout_frac="0.5")
    assert res["kind"] == "lm_ce" and open_reader(cache).meta.extra["loader"] == "bridge"
    assert res["cache_rel_error"] < 1e-5
    lo, hi = res["rows"]
    _, index = open_reader(cache).read_examples(lo, hi, layers=[0])
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "gpt")
    tokens = torch.from_numpy(index["token"].astype(np.int64))
    at = torch.from_numpy(index["valid"].astype(bool))
    sae = load_sae(find_checkpoints(run)[0])
    targets = tokens[:, 1:]
    scored = ~torch.isin(targets, torch.tensor([tok.cls_token_id, tok.sep_token_id, tok.pad_token_id]))

    def ce(mode: str) -> float:
        def hook(module, args, out):
            h = (out[0] if isinstance(out, tuple) else out).clone()
            h[at] = sae(h[at]) if mode == "spliced" else 0.0
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = hf.transformer.h[0].register_forward_hook(hook) if mode != "clean" else None
        with torch.no_grad():
            logits = hf(tokens, attention_mask=(tokens != tok.pad_token_id).long()).logits
        if handle is not None:
            handle.remove()
        return float(torch.nn.functional.cross_entropy(logits[:, :-1][scored], targets[scored]))

    for mode, key in (("clean", "ce_clean"), ("spliced", "ce_spliced"), ("zero", "ce_zero_ablated")):
        assert res[key] == pytest.approx(ce(mode), abs=1e-4), key


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory) -> Path:
    return shared_runs.minilm_run(tmp_path_factory)[1]


def test_minilm_sentence_embedding_cosine(minilm_run: Path, tmp_path: Path) -> None:
    """The real offline MiniLM (an encoder): the cache records its hub id, which re-creates the
    bundled model exactly; the result is the cosine of the mean-pooled sentence embeddings."""
    res = _downstream(minilm_run, split="tail", heldout_frac="1")
    assert res["kind"] == "embedding_cosine" and res["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert 0 < res["embedding_cosine"] <= 1 + 1e-6 and -1 <= res["embedding_cosine_zero_ablated"] < 1
    assert res["cache_rel_error"] < 1e-5 and "ce_clean" not in res
    assert _perfect_downstream(minilm_run, tmp_path, heldout_frac="1")["embedding_cosine"] == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def vit_runs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    return shared_runs.vit_runs(tmp_path_factory)


def _spliced_positions(adapter, index: np.ndarray, tokens: str) -> np.ndarray:
    """(n, T) bool: where the input of the block after an SAE at blocks.1 (reading ``tokens``)
    differs from the clean one, when it adds a decoder row (an edit with the error term kept)."""
    from helpers.inference import perfect_sae
    from sae_core.inference import HookedModel, SAEHook, Steer

    seen: list[torch.Tensor] = []

    def grab(module, args):
        x = args[0]
        seen.append((x if adapter._batch_first(x) else x.transpose(0, 1)).clone())

    handle = adapter.blocks[2].register_forward_pre_hook(grab)
    model = HookedModel(adapter)
    inputs = adapter.cached_inputs(index, _dataset())
    sae = perfect_sae(adapter.d_model, "blocks.1", tokens)
    try:
        model.run(inputs)
        model.run(inputs, SAEHook(sae, edits=[Steer(0, 1.0)]))
    finally:
        handle.remove()
    clean, edited = seen
    return ((edited - clean).abs().amax(-1) > 0).numpy()


def _dataset():
    from sae_core.datasets import open_dataset

    return open_dataset("samples", "image", n=12)


@pytest.mark.parametrize("name, kind", [("clip", "cls"), ("timm", "patch")])
def test_vit_embedding_cosine_replaces_only_trained_kind(vit_runs, name: str, kind: str) -> None:
    from sae_core.caching import build_adapter
    from sae_core.protocols import AdapterRequest

    cache, run = vit_runs[name]
    res = _downstream(run, split="tail", heldout_frac="0.5")
    assert res["kind"] == "embedding_cosine" and res["tokens"] == kind and res["rows"] == [6, 12]
    assert 0 < res["embedding_cosine"] <= 1 + 1e-6 and res["cache_rel_error"] < 1e-5
    reader = open_reader(cache)
    meta = reader.meta
    _, index = reader.read_examples(6, 12, layers=[0])
    kinds = np.array(meta.token_kinds)
    mask = index["valid"].astype(bool) & (kinds == kind)[None, :]
    assert res["n_spliced_tokens"] == int(mask.sum())
    adapter = build_adapter(meta.adapter, AdapterRequest(model=meta.model, layers=meta.layers,
                                                         options=dict(meta.extra["options"])))
    assert np.array_equal(_spliced_positions(adapter, index, kind), mask)


def test_clip_cosine_matches_manual_hooks_in_both_layouts(vit_runs) -> None:
    """An independent open_clip forward with the cls position replaced gives the same cosine and
    zero-shot-style logits (the clean image embeddings of the rows as classes, CLIP's scale);
    replacing every position would not. Blocks run as (tokens, batch, d) give the same numbers."""
    import open_clip
    from sae_core.caching import build_adapter
    from sae_core.protocols import AdapterRequest

    cache, run = vit_runs["clip"]
    res = _downstream(run, split="tail", heldout_frac="0.5")
    (ckpt,) = find_checkpoints(run)
    sae = load_sae(ckpt)
    meta = open_reader(cache).meta
    cfg = Path(meta.model[len("config:") :])
    torch.manual_seed(0)
    open_clip.add_model_config(str(cfg))
    model, _, preprocess = open_clip.create_model_and_transforms(cfg.stem, pretrained=None)
    visual = model.visual.eval()
    ds = _dataset()
    pixels = torch.stack([preprocess(ds[i].data) for i in range(6, 12)])

    def embeddings(positions: slice) -> tuple[torch.Tensor, torch.Tensor]:
        def hook(module, args, out):
            out = out.clone()
            out[:, positions] = sae(out[:, positions])
            return out

        with torch.no_grad():
            clean = visual(pixels)
            handle = visual.transformer.resblocks[1].register_forward_hook(hook)
            spliced = visual(pixels)
            handle.remove()
        return clean, spliced

    def cosine(positions: slice) -> float:
        return float(torch.nn.functional.cosine_similarity(*embeddings(positions), dim=-1).mean())

    assert res["embedding_cosine"] == pytest.approx(cosine(slice(0, 1)), abs=1e-5)
    assert abs(res["embedding_cosine"] - cosine(slice(None))) > 1e-4
    clean, spliced = (torch.nn.functional.normalize(e.double(), dim=-1) for e in embeddings(slice(0, 1)))
    scale = float(model.logit_scale.exp())
    ref, logits = scale * clean @ clean.T, scale * spliced @ clean.T  # (6, 6): images vs clean images as classes
    assert res["zeroshot_logit_scale"] == pytest.approx(scale) and res["zeroshot_classes"] == 6
    assert res["zeroshot_logit_change_spliced"] == pytest.approx(float((logits - ref).abs().mean()), rel=1e-4)
    kl = (ref.softmax(-1) * (ref.log_softmax(-1) - logits.log_softmax(-1))).sum(-1).mean()
    assert res["zeroshot_kl_spliced"] == pytest.approx(float(kl), rel=1e-3, abs=1e-7)
    assert res["zeroshot_top1_agreement_spliced"] == float((logits.argmax(-1) == ref.argmax(-1)).double().mean())
    assert {"zeroshot_logit_change_zero_ablated", "zeroshot_logit_change_spliced_se"} <= set(res)

    adapter = build_adapter("clip", AdapterRequest(model=meta.model, layers=meta.layers))
    acts, index = open_reader(cache).read_examples(6, 12, layers=[0])
    mask = np.zeros(index.shape, dtype=bool)
    mask[:, 0] = True

    def splice_eval():
        from sae_core.inference.splice_eval import splice_metrics

        return splice_metrics(adapter, sae, "blocks.1", index, acts[:, 0], kinds=list(meta.token_kinds), tokens="cls",
                              dataset=ds, batch_rows=4)

    first = splice_eval()
    seq = open_clip.transformer.Transformer(48, 3, 3, batch_first=False)  # same weights, (tokens, batch, d) blocks
    seq.load_state_dict(adapter.model.transformer.state_dict())
    adapter.model.transformer = seq.eval()
    adapter.blocks = seq.resblocks
    shapes: list[tuple[int, ...]] = []
    seq.resblocks[1].register_forward_hook(lambda m, a, o: shapes.append(tuple(o.shape)))
    second = splice_eval()
    assert shapes[0] == (17, 4, 48)  # tokens first
    assert second["embedding_cosine"] == pytest.approx(first["embedding_cosine"], abs=1e-5)
    assert first["embedding_cosine"] == pytest.approx(res["embedding_cosine"], abs=1e-5)
    assert second["cache_rel_error"] < 1e-5  # the (tokens, batch, d) blocks hand the same activations
    assert np.array_equal(_spliced_positions(adapter, index, "cls"), mask)


def test_skips_and_errors(tmp_path: Path, run_cli) -> None:
    """No adapter plugin / no splice_eval: downstream.json says why and `sae analyze` goes on;
    bad options are one-line errors."""
    from sae_core.protocols import ActivationBatch, CacheMetadata
    from sae_core.stores import open_writer

    meta = CacheMetadata(adapter="not-installed", model="m", layers=["a"], d_model=8, dtype="float32", tokens_per_example=2,
                         token_kinds=["token", "token"], dataset={"spec": "synthetic"})
    w = open_writer(tmp_path / "c", meta)
    w.write(ActivationBatch(acts=torch.randn(64, 1, 2, 8), example_ids=np.arange(64)))
    cache = w.close()
    code, _, err = run_cli("train", "--data", str(cache), "--out", str(tmp_path / "run"), "--arch", "topk", "--k", "2",
                           "--exp-factor", "2", "--steps", "5", "--batch-size", "16", "-q")
    assert code == 0, err
    code, out, err = run_cli("analyze", str(tmp_path / "run"), "-q")
    assert code == 0, err
    (ckpt,) = find_checkpoints(tmp_path / "run")
    assert "not installed" in json.loads((ckpt / "downstream.json").read_text())["skipped"]
    assert (ckpt / "reconstruction.json").is_file()  # the other analyses ran

    code, out, err = run_cli("cache", "--adapter", "mlp", "--model", "x", "--data", "gaussian:64", "--layers", "0",
                             "--out", str(tmp_path / "mlp"), "-q")
    assert code == 0, err
    code, _, err = run_cli("train", "--data", out.strip().splitlines()[-1], "--out", str(tmp_path / "mlprun"), "--arch",
                           "topk", "--k", "2", "--exp-factor", "2", "--steps", "5", "--batch-size", "16", "-q")
    assert code == 0, err
    res = _downstream(tmp_path / "mlprun")
    assert res["skipped"] == ("adapter 'mlp' cannot run its model with SAEs attached (it implements neither "
                              "run_with_hooks nor splice_eval)")

    code, _, err = run_cli("analyze", str(tmp_path / "run"), "--only", "downstream", "--option", "downstream_rows=many", "-q")
    assert code == 1 and "--option downstream_rows= expects int, got 'many'" in err and "Traceback" not in err
    code, _, err = run_cli("analyze", str(tmp_path / "run"), "--option", "downstream_row=3", "-q")
    assert code == 1 and "unknown analysis option(s) ['downstream_row']" in err and "downstream_rows" in err
    code, _, err = run_cli("analyze", str(tmp_path / "run"), "--option", "downstream_rows", "-q")
    assert code == 1 and "--option expects KEY=VALUE" in err


def test_a_metric_that_cannot_move_is_reported_as_such(tmp_path: Path) -> None:
    """Patch tokens at a timm ViT's last block never reach its CLS-pooled embedding: zero ablation
    changes nothing, so the spliced cosine (1.0000) is reported as not measurable, not as 1."""
    from helpers.shared_runs import TIMM_ARGS

    _, run = cache_and_train(tmp_path, ["--adapter", "timm", *TIMM_ARGS, "--data", "samples", "--data-opt", "n=6",
                                        "--layers", "2"], "--tokens", "patch", "--k", "4", "--batch-size", "32")
    res = _downstream(run, split="all")
    assert res["kind"] == "embedding_cosine" and "not_measurable" in res
    assert res["embedding_cosine"] is None and res["embedding_cosine_zero_ablated"] is None
    assert res["unmovable_raw"]["embedding_cosine_zero_ablated"] == pytest.approx(1.0, abs=1e-6)


def test_flag_unmovable_leaves_moving_metrics_alone() -> None:
    from sae_core.analyses.downstream import flag_unmovable

    moving = {"kind": "lm_ce", "ce_clean": 3.0, "ce_spliced": 3.1, "ce_zero_ablated": 3.5, "kl_zero_ablated": 0.2,
              "ce_loss_recovered": 0.8}
    assert flag_unmovable(moving) == moving
    still = {**moving, "ce_zero_ablated": 3.0, "kl_zero_ablated": 0.0, "ce_spliced": 3.0, "ce_loss_recovered": None}
    flagged = flag_unmovable(still)
    assert flagged["ce_spliced"] is None and "not_measurable" in flagged and flagged["ce_clean"] == 3.0
    cos = {"kind": "embedding_cosine", "embedding_cosine": 0.93, "embedding_cosine_zero_ablated": 0.5}
    assert flag_unmovable(cos) == cos


def test_viewer_says_not_measurable() -> None:
    from sae_core.analyses.downstream import flag_unmovable
    from sae_viewer.data import downstream_line

    flagged = flag_unmovable({"kind": "embedding_cosine", "embedding_cosine": 1.0, "embedding_cosine_zero_ablated": 1.0,
                              "layer": "blocks.2", "tokens": "patch", "n_rows": 6})
    line = downstream_line(flagged)
    assert "not measurable" in line and "1.0000" not in line


def test_the_model_loads_once_for_all_model_running_analyses(lm_run, monkeypatch: pytest.MonkeyPatch) -> None:
    """downstream and logit-effects share one model per `sae analyze` (inference.loading.shared_adapter)."""
    from sae_core.inference import loading
    from sae_text.adapters.tlens import TLensAdapter

    loading._SHARED.clear()
    built = []
    real = TLensAdapter.__init__

    def counting(self, *a, **k):  # type: ignore[no-untyped-def]
        built.append(1)
        real(self, *a, **k)

    monkeypatch.setattr(TLensAdapter, "__init__", counting)
    _, run = lm_run
    out = analyse_run(run, only=["downstream", "logit-effects"], progress=False, options={"split": "tail"})
    (res,) = out.values()
    assert "skipped" not in res["downstream"] and "skipped" not in res["logit-effects"], res
    assert len(built) == 1
