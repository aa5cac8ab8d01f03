"""Transcoders: an SAE that encodes one layer and reconstructs another.

The bank equations are checked against the paper references in ``test_arch_reference.py``
(transcoder mode); here: the normalisation folded at export (a saved transcoder maps the raw
input to the raw target exactly as the normalised training model does), the config and CLI
surface, the splice of the downstream analysis, and one run end to end through the CLI — a tiny
HookedTransformer cached at ``ln2.hook_normalized`` and ``hook_mlp_out``, a sweep of TopK and
ReLU transcoders trained, analysed, loaded by the viewer and exported to SAELens.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_core.checkpoint.cfg import SAECheckpointConfig, read_cfg
from sae_core.errors import ConfigError, SAEError
from sae_core.protocols import ActivationBatch, CacheMetadata
from sae_core.stores import open_reader, open_writer
from sae_text.minilm import minilm_dir

ARCHS = ["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]
D = 12


def _write_pair_cache(root: Path, n: int = 60, tokens: int = 8) -> Path:
    """Layer 0: inputs x around an offset; layer 1: a nonlinear function of x on a 40x larger
    scale with its own offset (so input and target scales and centres differ)."""
    meta = CacheMetadata(adapter="test", model="pair", layers=["mlp_in", "mlp_out"], d_model=D, dtype="float32",
                         tokens_per_example=tokens, token_kinds=["token"] * tokens, dataset={"spec": "synthetic"})
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(D, D, generator=gen) / D**0.5
    writer = open_writer(root, meta, shard_examples=25)
    for lo in range(0, n, 10):
        x = torch.randn(10, tokens, D, generator=gen) * 0.3 + 1.5
        y = 40.0 * torch.relu(x @ w) - 7.0
        writer.write(ActivationBatch(acts=torch.stack([x, y], dim=1), example_ids=np.arange(lo, lo + 10)))
    return writer.close()


def _config(cache: Path, out: Path, archs: list[str], steps: int = 12, **data):
    from sae_core.train import expand

    return expand(str(cache), D, {"layer": "mlp_in", "layer_out": "mlp_out", "batch_size": 32, **data},
                  {"arch": archs, "k": 3, "exp_factor": 2, "lr": 3e-3}, {"steps": steps, "log_every": 4}, str(out))


def test_saved_transcoder_maps_raw_input_to_raw_target_like_the_training_model(tmp_path: Path) -> None:
    from sae_core import load_sae
    from sae_core.train.group import GroupTrainer

    cache = _write_pair_cache(tmp_path / "cache")
    config = _config(cache, tmp_path / "run", ARCHS, steps=30)
    reader = open_reader(cache)
    ((data, saes),) = config.groups().items()
    trainer = GroupTrainer(config, reader, data, saes, tmp_path / "run", 0)
    trainer.run(resume=False, progress=False, stop_after=None)
    assert trainer.scale_out is not None and trainer.scale_out < trainer.scale / 10  # two scales, far apart
    acts, _ = reader.read_examples(0, reader.n_examples)
    x, y = acts[:, 0].reshape(-1, D), acts[:, 1].reshape(-1, D)  # raw
    for bi, bank in enumerate(trainer.banks):
        assert bank.transcoder
        with torch.no_grad():
            normalised = bank.decode(bank.encode(x * trainer.scale)) / trainer.scale_out  # (n, tokens, D) raw target
        for i, m in enumerate(trainer.members[bi]):
            sae = load_sae(tmp_path / "run" / m.name)
            assert sae.is_transcoder and sae.d_out == D
            with torch.no_grad():
                pred = sae(x)
            torch.testing.assert_close(pred, normalised[i], rtol=1e-4, atol=1e-4 * float(y.abs().max()),
                                       msg=f"{m.name}: folded checkpoint vs normalised training model")
            fvu = float(((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
            # it predicts the target, not the input (whose FVU against y is far above 1); in 30 steps the
            # TopK family learns, the L1/L0-penalised ones barely start
            limit = 0.9 if m.arch in ("topk", "batchtopk", "matryoshka") else 2.0
            assert fvu < limit, (m.name, fvu)
            assert float(((x - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()) > 10
            cfg = read_cfg(tmp_path / "run" / m.name)
            assert cfg.source.layer == "mlp_in" and cfg.source.layer_out == "mlp_out" and cfg.source.layer_out_index == 1
            assert cfg.normalization.scale == pytest.approx(trainer.scale)
            assert cfg.normalization.scale_out == pytest.approx(trainer.scale_out)


def test_transcoder_resumes_bit_for_bit(tmp_path: Path) -> None:
    from sae_core.checkpoint.weights import load_weights
    from sae_core.train import run_training

    cache = _write_pair_cache(tmp_path / "cache")
    whole = run_training(_config(cache, tmp_path / "a", ["topk", "jumprelu"]), progress=False)
    cut = _config(cache, tmp_path / "b", ["topk", "jumprelu"])
    run_training(cut, progress=False, stop_after=5)
    run_training(cut, progress=False, resume=True)
    for name in ("topk-k3", "jumprelu"):
        a, b = load_weights(whole / name / "sae.safetensors"), load_weights(tmp_path / "b" / name / "sae.safetensors")
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_cfg_json_of_an_sae_has_no_transcoder_fields_and_old_files_read() -> None:
    sae = SAECheckpointConfig(architecture="topk", d_in=4, d_sae=8)
    doc = sae.to_json()
    assert "d_out" not in doc and "layer_out" not in doc["source"] and "scale_out" not in doc["normalization"]
    assert not SAECheckpointConfig.from_json(doc).is_transcoder
    tc = SAECheckpointConfig(architecture="topk", d_in=4, d_sae=8, d_out=6)
    tc.source.layer_out = "b"
    back = SAECheckpointConfig.from_json(json.loads(json.dumps(tc.to_json())))
    assert back.is_transcoder and back.width_out == 6 and back.source.layer_out == "b"


def test_sae_seeds_and_run_config_of_saes_are_unchanged(tmp_path: Path) -> None:
    """Adding layer_out to the data config must not change an SAE's identity (its init seed)."""
    from sae_core.train import expand
    from sae_core.train.parallel import sae_seeds

    cfg = expand("c", 8, {"layer": 0}, {"arch": "topk", "k": 4}, {}, str(tmp_path))
    assert "layer_out" not in cfg.to_json()["saes"][0]["data"]
    import zlib

    ident = json.dumps({"arch": "topk", "d_sae": 64, "hyper": cfg.saes[0].hyper, "lr": 3e-4,
                        "data": {"layer": "0", "tokens": "all", "batch_size": 4096, "normalize": True,
                                 "val_fraction": 0.02, "val_seed": 0}}, sort_keys=True, default=str)
    assert sae_seeds(0, cfg.saes) == {cfg.saes[0].name: zlib.crc32(f"{ident}#0".encode()) % 2**62}


def test_config_surface(tmp_path: Path, run_cli) -> None:
    from sae_core.train import expand

    cfg = expand("c", 8, {"layer_in": 0, "layer_out": [1, 2]}, {"arch": "topk", "k": 4}, {}, str(tmp_path))
    assert [(s.data.layer, s.data.layer_out) for s in cfg.saes] == [("0", "1"), ("0", "2")]
    assert [s.name for s in cfg.saes] == ["topk-layer_out1-k4", "topk-layer_out2-k4"]
    with pytest.raises(ConfigError, match="not both"):
        expand("c", 8, {"layer_in": 0, "layer": 0}, {}, {}, str(tmp_path))
    with pytest.raises(ConfigError, match="that is an SAE"):
        expand("c", 8, {"layer": 1, "layer_out": 1}, {}, {}, str(tmp_path))
    cache = _write_pair_cache(tmp_path / "cache", n=20)
    code, _, err = run_cli("train", "--data", str(cache), "--out", str(tmp_path / "r"), "--layer-in", "mlp_in",
                           "--layer-out", "0", "--steps", "2", "--batch-size", "16", "-q")
    assert code == 1 and "is the input layer" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("train", "--data", str(cache), "--out", str(tmp_path / "r"), "--layer", "mlp_in",
                           "--layer-out", "nope", "--steps", "2", "--batch-size", "16", "-q")
    assert code == 1 and "nope" in err


def test_architectures_without_transcoder_support_are_refused() -> None:
    from sae_core.archs.relu import ReLU, ReLUHyper

    class Old(ReLU):  # a plugin architecture written before transcoders: its bank ignores the target
        name = "old"
        supports_transcoder = False

    with pytest.raises(ConfigError, match="does not support transcoders"):
        Old.build_bank(4, 8, [ReLUHyper()], d_out=4)
    assert not Old.build_bank(4, 8, [ReLUHyper()]).transcoder


# -- splicing a transcoder into the model ------------------------------------------------------------
TINY_LM = {"n_layers": 2, "d_model": 32, "n_ctx": 64, "d_head": 8, "n_heads": 4, "d_mlp": 64, "d_vocab": 30522,
           "act_fn": "gelu", "normalization_type": "LN", "default_prepend_bos": True}
HOOK_IN, HOOK_OUT = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"
HF_DOCS = ["Sparse autoencoders decompose activations into interpretable features of language models.",
        "The quick brown fox jumps over the lazy dog. " * 4,
        "Transcoders read the input of an MLP and predict its output, token by token.",
        "Residual streams carry information between transformer blocks, layer after layer."] * 3


@pytest.fixture(scope="module")
def tlens_cache(tmp_path_factory) -> Path:
    from conftest import cli_runner

    root = tmp_path_factory.mktemp("tc_lm")
    (root / "tiny.json").write_text(json.dumps(TINY_LM))
    (root / "docs.txt").write_text("\n\n".join(HF_DOCS))
    code, out, err = cli_runner()("cache", "--adapter", "tlens", "--model", f"config:{root / 'tiny.json'}",
                                  "--opt", f"tokenizer={minilm_dir()}", "--hook", HOOK_IN, "--hook", HOOK_OUT,
                                  "--data", f"text:{root / 'docs.txt'}", "--context-size", "16",
                                  "--out", str(root / "cache"), "-q")
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


def test_tlens_splice_from_a_source_hook(tlens_cache: Path) -> None:
    """Splicing the model's own MLP as the 'transcoder' (hook_normalized -> hook_mlp_out) leaves
    the output unchanged; a wrong map changes it; a source after the layer is refused."""
    from sae_core.protocols import AdapterRequest
    from sae_text.adapters.tlens import TLensAdapter

    reader = open_reader(tlens_cache)
    assert reader.meta.layers == [HOOK_IN, HOOK_OUT]
    _, index = reader.read_examples(0, reader.n_examples)
    meta = reader.meta
    adapter = TLensAdapter(AdapterRequest(model=meta.model, layers=list(meta.layers), context_size=16,
                                          options={k: str(v) for k, v in meta.extra["options"].items()}))
    mask = index["valid"].astype(bool)
    mlp = adapter.model.blocks[0].mlp
    seen: list[int] = []

    def true_mlp(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return mlp(x[None])[0]

    result = adapter.splice_eval(index, mask, HOOK_OUT, true_mlp, batch_rows=4, source=HOOK_IN)
    assert sum(seen) == mask.sum()
    assert result["ce_spliced"] == pytest.approx(result["ce_clean"], abs=1e-5)
    assert result["ce_zero_ablated"] != pytest.approx(result["ce_clean"], abs=1e-4)
    wrong = adapter.splice_eval(index, mask, HOOK_OUT, lambda x: x, batch_rows=4, source=HOOK_IN)
    assert wrong["ce_spliced"] != pytest.approx(result["ce_clean"], abs=1e-4)
    with pytest.raises(SAEError, match="does not run before"):
        adapter.splice_eval(index, mask, HOOK_IN, true_mlp, batch_rows=4, source=HOOK_OUT)


def test_hf_splice_from_a_source_module(tmp_path: Path, run_cli) -> None:
    """The hf adapter: the input of GPT-2's block-1 MLP spliced through the MLP itself into its
    output changes nothing; an identity map from the input does."""
    from helpers.text_hf import gpt2_tokenizer
    from sae_core.protocols import AdapterRequest
    from sae_text.adapters.hf import HFAdapter
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = gpt2_tokenizer()
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    (tmp_path / "docs.txt").write_text("\n\n".join(["the quick brown fox jumps over the lazy dog . " * 3,
                                                    "sparse autoencoders decompose activations into features ."] * 3))
    hooks = ["transformer.h.1.mlp:input", "transformer.h.1.mlp"]
    code, out, err = run_cli("cache", "--adapter", "hf", "--model", str(tmp_path / "m"), "--hook", hooks[0], "--hook",
                             hooks[1], "--data", f"text:{tmp_path / 'docs.txt'}", "--context-size", "16",
                             "--out", str(tmp_path / "cache"), "-q")
    assert code == 0, err
    reader = open_reader(out.strip().splitlines()[-1])
    _, index = reader.read_examples(0, reader.n_examples)
    adapter = HFAdapter(AdapterRequest(model=str(tmp_path / "m"), layers=reader.meta.layers, context_size=16))
    mask = index["valid"].astype(bool)
    mlp = copy.deepcopy(adapter.model.transformer.h[1].mlp)  # a copy: the model's own is hooked while splicing
    same = adapter.splice_eval(index, mask, hooks[1], lambda x: mlp(x), batch_rows=3, source=hooks[0])
    assert same["ce_spliced"] == pytest.approx(same["ce_clean"], abs=1e-5)
    other = adapter.splice_eval(index, mask, hooks[1], lambda x: x, batch_rows=3, source=hooks[0])
    assert other["ce_spliced"] != pytest.approx(same["ce_clean"], abs=1e-4)


# -- end to end through the CLI ------------------------------------------------------------------------
def test_transcoder_end_to_end_cli(tlens_cache: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """cache (both hooks) -> train a TopK + ReLU transcoder sweep -> info -> analyze -> viewer ->
    export to SAELens (ReLU: its `transcoder`; TopK: refused, SAELens has none) and load it back."""
    from sae_core import load_sae
    from sae_viewer import data as viewer_data

    (tmp_path / "grid.toml").write_text(f"""
[data]
layer_in = "{HOOK_IN}"
layer_out = "{HOOK_OUT}"
batch_size = 64
val_fraction = 0.2
[train]
steps = 30
log_every = 10
[sae]
arch = ["topk", "relu"]
k = 4
l1_coeff = 0.3
exp_factor = 2
lr = 3e-3
""")
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", str(tlens_cache), "--sweep", str(tmp_path / "grid.toml"), "--out", str(run), "-q")
    assert code == 0, err
    sweep = json.loads((run / "sweep.json").read_text())
    assert [(s["name"], s["layer"], s["layer_out"]) for s in sweep["saes"]] == [
        ("topk-k4", HOOK_IN, HOOK_OUT), ("relu", HOOK_IN, HOOK_OUT)]
    code, out, err = run_cli("info", str(run / "topk-k4"))
    assert code == 0, err
    assert json.loads(out)["transcoder"] == {"input": HOOK_IN, "output": HOOK_OUT, "d_in": 32, "d_out": 32}

    code, _, err = run_cli("analyze", str(run), "-q")
    assert code == 0, err
    reader = open_reader(tlens_cache)
    for name in ("topk-k4", "relu"):
        cfg = read_cfg(run / name)
        rec = json.loads((run / name / "reconstruction.json").read_text())
        assert rec["transcoder"] == {"input": HOOK_IN, "target": HOOK_OUT}
        assert rec["fvu"] == pytest.approx(cfg.metrics["val_fvu"], rel=1e-3)  # both: the target, on the val split
        down = json.loads((run / name / "downstream.json").read_text())
        assert down["kind"] == "lm_ce" and down["layer"] == HOOK_OUT and down["source"] == HOOK_IN, down
        assert down["cache_rel_error"] < 1e-4 and down["ce_spliced"] != down["ce_clean"]
        assert (run / name / "feature_stats.safetensors").is_file() and (run / name / "top_examples.safetensors").is_file()
    # the reconstruction FVU is the target's: recompute it from the cache with the loaded transcoder
    sae = load_sae(run / "topk-k4")
    from sae_core.validation_split import ExampleSplit, Selection

    rows = reader.rows(Selection(ExampleSplit(0.2, 0), "val"))
    acts, index = reader.read_examples(int(rows[0]), int(rows[-1]) + 1)
    keep = index["valid"].astype(bool) & np.isin(index["example"], index["example"][rows - rows[0]])
    x, y = acts[:, 0][torch.from_numpy(keep)], acts[:, 1][torch.from_numpy(keep)]
    with torch.no_grad():
        fvu = float(((sae(x) - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    assert fvu == pytest.approx(json.loads((run / "topk-k4" / "reconstruction.json").read_text())["fvu"], rel=1e-3)

    saes = viewer_data.find_saes(run)
    rows_v = viewer_data.sweep_rows(saes)
    assert all("→" in r["layer"] and "transcoder" in r["layer"] for r in rows_v) and all("CE recovered" in r for r in rows_v)
    assert "as predicted from" in viewer_data.downstream_line(viewer_data.downstream(saes[0]))
    feats = viewer_data.feature_table(saes[0])
    assert feats is not None and viewer_data.top_examples(saes[0], int(np.argmax(feats["frequency"]))) is not None
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SAE_VIEWER_RUN", str(run))
    app = Path(__file__).resolve().parents[3] / "packages" / "sae-viewer" / "src" / "sae_viewer" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    at.sidebar.radio[0].set_value("Features").run()
    assert not at.exception, at.exception
    assert [m.value for m in at.markdown if 'class="ctx"' in m.value]  # top contexts with token highlighting

    code, _, err = run_cli("export", str(run), "--format", "saelens", "--out", str(tmp_path / "all"))
    errors = [line for line in err.splitlines() if line.startswith("error")]  # (streamlit may log warnings)
    assert code == 1 and len(errors) == 1 and "SAELens has no topk transcoder" in errors[0], err
    assert not (tmp_path / "all").exists()
    code, _, err = run_cli("export", str(run / "relu"), "--format", "saelens", "--out", str(tmp_path / "sl"))
    assert code == 0, err
    from sae_lens import SAE as SLSAE

    sl = SLSAE.load_from_disk(str(tmp_path / "sl"))
    assert type(sl).__name__ == "Transcoder" and sl.cfg.d_out == 32
    assert sl.cfg.metadata.hook_name == HOOK_IN and sl.cfg.metadata.hook_name_out == HOOK_OUT
    ours, back = load_sae(run / "relu"), load_sae(tmp_path / "sl")
    assert back.is_transcoder and back.cfg.source.layer_out == HOOK_OUT
    with torch.no_grad():
        torch.testing.assert_close(sl(x), ours(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(back(x), ours(x), rtol=1e-6, atol=1e-6)


def test_downstream_skips_a_transcoder_whose_input_runs_after_its_output(tlens_cache: Path, tmp_path: Path, run_cli) -> None:
    """E.g. a post-LN model's ln2 (after the MLP) used as the input: nothing to splice, said why."""
    code, _, err = run_cli("train", "--data", str(tlens_cache), "--out", str(tmp_path / "r"), "--layer", HOOK_OUT,
                           "--layer-out", HOOK_IN, "--k", "4", "--exp-factor", "1", "--steps", "3", "--batch-size", "32",
                           "--val-fraction", "0.2", "-q")
    assert code == 0, err
    code, _, err = run_cli("analyze", str(tmp_path / "r"), "--only", "downstream", "-q")
    assert code == 0, err
    down = json.loads((tmp_path / "r" / "topk-k4" / "downstream.json").read_text())
    assert "does not run before" in down["skipped"] and down["source"] == HOOK_OUT and down["layer"] == HOOK_IN
