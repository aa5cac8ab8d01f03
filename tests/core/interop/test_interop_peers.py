"""Checkpoints written by the real peer packages (eai-sparsify, dictionary-learning, saev): we
recognise them by content, load them, and our encode/decode equal the peer's own forward on the
same inputs (fp32, max abs diff <= 1e-5). Exports the other way are loaded by the peer.

Each peer is a dev dependency (pyproject.toml); a test skips with the reason if its package is
not installed (e.g. an offline machine without it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers.checkpoints import tiny_checkpoint
from sae_core.checkpoint import load_sae

D_IN, D_SAE = 8, 32
ATOL = 1e-5
if not torch.cuda.is_available():  # sparsify's own switch to its eager decoder (its Triton kernel needs a GPU)
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")


def _peer(name: str):
    return pytest.importorskip(name, reason=f"the peer package {name} is not installed (uv sync --all-packages)")


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random (biases too, so their mapping is checked), thresholds small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.is_floating_point():
                continue
            scale = 0.2 if p.dim() == 1 else 0.4  # outputs of order 1: 1e-5 is then fp32 rounding, not luck
            p.copy_(torch.randn(p.shape, generator=g) * scale)
            if "threshold" in name:
                p.copy_(torch.rand(p.shape, generator=g) * 0.4)


def _x(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    diff = (ours.float() - theirs.float()).abs().max().item()
    assert diff <= ATOL, f"max abs diff {diff:.3g} > {ATOL}"


# ---------------------------------------------------------------- EleutherAI sparsify


def _sparsify_coder(tmp: Path, name: str, **cfg) -> object:
    sparsify = _peer("sparsify")
    coder = sparsify.SparseCoder(D_IN, sparsify.SparseCoderConfig(num_latents=D_SAE, k=5, **cfg))
    _randomise(coder)
    coder.save_to_disk(tmp / name)
    return coder


def _sparsify_dense(coder, x: torch.Tensor) -> torch.Tensor:
    acts, idx, _ = coder.encode(x)  # (n, k) each
    return torch.zeros(x.shape[0], D_SAE).scatter(-1, idx, acts.float())  # (n, d_sae)


@pytest.mark.parametrize("transcode", [False, True])
def test_sparsify_checkpoint_loads_and_matches(tmp_path: Path, transcode: bool) -> None:
    from sae_core.interop.detect import checkpoint_format

    coder = _sparsify_coder(tmp_path, "layers.3", transcode=transcode)
    assert checkpoint_format(tmp_path / "layers.3") == "sparsify"  # same file names as ours, told apart by content
    ours = load_sae(tmp_path / "layers.3")
    assert ours.architecture == "topk" and ours.is_transcoder == transcode and ours.cfg.hyper["k"] == 5
    x = _x()
    with torch.no_grad():
        f = ours.encode(x)
        _close(f, _sparsify_dense(coder, x))
        acts, idx, _ = coder.encode(x)
        _close(ours.decode(f), coder.decode(acts, idx))
        assert (f > 0).sum(-1).max() <= 5 and (f > 0).any()


def test_sparsify_unsupported_options_are_one_line_errors(tmp_path: Path, run_cli) -> None:
    _sparsify_coder(tmp_path, "skip", skip_connection=True)
    code, _, err = run_cli("import", str(tmp_path / "skip"), "--out", str(tmp_path / "o"))
    assert code == 1 and "skip_connection" in err and len(err.strip().splitlines()) == 1


def test_sparsify_run_imports_one_sae_per_hook(tmp_path: Path, run_cli) -> None:
    from sae_core.checkpoint.cfg import read_cfg

    coders = {h: _sparsify_coder(tmp_path / "run", h) for h in ("layers.1", "layers.2")}
    (tmp_path / "run" / "config.json").write_text(json.dumps({"sae": {}, "batch_size": 4}))  # sparsify's TrainConfig
    code, _, err = run_cli("import", str(tmp_path / "run"), "--out", str(tmp_path / "conv"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "conv").iterdir()) == ["layers.1", "layers.2"]
    x = _x()
    for hook, coder in coders.items():
        cfg = read_cfg(tmp_path / "conv" / hook)  # ours now: every command reads it
        assert cfg.source.imported_from == "sparsify" and cfg.provenance["format"] == "sparsify"
        assert cfg.provenance["peer_config"]["k"] == 5 and cfg.provenance["path"].endswith(hook)
        with torch.no_grad():
            _close(load_sae(tmp_path / "conv" / hook).encode(x), _sparsify_dense(coder, x))


def test_sparsify_folder_gets_one_line_answer_in_commands(tmp_path: Path, run_cli) -> None:
    """The reported bug: our commands mistook a sparsify folder for ours and failed on cfg.json."""
    _sparsify_coder(tmp_path, "layers.0")
    ckpt = str(tmp_path / "layers.0")
    for args in (["analyze", ckpt], ["export", ckpt, "--out", str(tmp_path / "e")], ["view", ckpt, "--headless"],
                 ["upload", ckpt, "--repo", "a/b"]):
        code, _, err = run_cli(*args)
        assert code == 1, (args, err)
        assert "sparsify" in err and "sae import" in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli("features", ckpt, "--text", "a")  # load_sae reads it; features then needs the model's cache
    assert code == 1 and "pass --data CACHE" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli("info", ckpt)  # info describes it, and says how to convert it
    assert code == 0 and json.loads(out)["kind"] == "sparsify-checkpoint" and "sae import" in out


def test_export_sparsify_loads_in_sparsify(tmp_path: Path, run_cli) -> None:
    sparsify = _peer("sparsify")
    ckpt = tiny_checkpoint(tmp_path, "topk", {"k": 5})
    code, _, err = run_cli("export", str(ckpt), "--format", "sparsify", "--out", str(tmp_path / "sp"))
    assert code == 0, err
    theirs = sparsify.SparseCoder.load_from_disk(tmp_path / "sp")
    ours = load_sae(ckpt)
    x = torch.randn(32, ours.d_in)
    with torch.no_grad():
        acts, idx, _ = theirs.encode(x)
        dense = torch.zeros(32, ours.d_sae).scatter(-1, idx, acts)
        _close(ours.encode(x), dense)
        _close(ours.decode(ours.encode(x)), theirs.decode(acts, idx))


def test_export_sparsify_refuses_other_architectures(tmp_path: Path, run_cli) -> None:
    ckpt = tiny_checkpoint(tmp_path, "relu", {})
    code, _, err = run_cli("export", str(ckpt), "--format", "sparsify", "--out", str(tmp_path / "sp"))
    assert code == 1 and "sparsify holds only TopK" in err and not (tmp_path / "sp").exists()


# ---------------------------------------------------------------- dictionary_learning


def _dl_trainer(name: str):
    """A dictionary_learning trainer as its trainSAE builds one (steps, dims, layer, lm_name)."""
    _peer("dictionary_learning")
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    from dictionary_learning.trainers.gated_anneal import GatedAnnealTrainer
    from dictionary_learning.trainers.gdm import GatedSAETrainer
    from dictionary_learning.trainers.jumprelu import JumpReluTrainer
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKTrainer
    from dictionary_learning.trainers.p_anneal import PAnnealTrainer
    from dictionary_learning.trainers.standard import StandardTrainer, StandardTrainerAprilUpdate
    from dictionary_learning.trainers.top_k import TopKTrainer

    common = {"steps": 10_000, "warmup_steps": 10, "activation_dim": D_IN, "dict_size": D_SAE, "layer": 3,
              "lm_name": "tiny-lm", "device": "cpu", "submodule_name": "resid_post_layer_3"}
    l1 = {"sparsity_warmup_steps": 10}
    table = {
        "standard": (StandardTrainer, l1), "standard_april": (StandardTrainerAprilUpdate, l1),
        "p_anneal": (PAnnealTrainer, l1), "top_k": (TopKTrainer, {"k": 4}),
        "batch_top_k": (BatchTopKTrainer, {"k": 4}), "jumprelu": (JumpReluTrainer, l1),
        "gated": (GatedSAETrainer, l1), "gated_anneal": (GatedAnnealTrainer, l1),
        "matryoshka": (MatryoshkaBatchTopKTrainer, {"k": 4, "group_fractions": [0.25, 0.25, 0.5]}),
    }
    cls, kw = table[name]
    if name == "gated_anneal":  # the one trainer without a submodule name
        del common["submodule_name"]
    return cls(**common, **kw)


def _dl_save(trainer, out: Path) -> None:
    """What dictionary_learning.training.trainSAE writes for one trainer (config.json, ae.pt)."""
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"trainer": trainer.config, "buffer": {"d_submodule": D_IN}},
                                                indent=4, default=str))
    torch.save({k: v.cpu() for k, v in trainer.ae.state_dict().items()}, out / "ae.pt")


def _dl_from_pretrained(trainer, path: Path):
    cls = type(trainer.ae)
    return cls.from_pretrained(path / "ae.pt") if cls.__name__ != "JumpReluAutoEncoder" else \
        cls.from_pretrained(str(path / "ae.pt"))


DL_TRAINERS = ["standard", "standard_april", "p_anneal", "top_k", "batch_top_k", "jumprelu", "gated", "gated_anneal",
               "matryoshka"]
DL_ARCH = {"standard": "relu", "standard_april": "relu", "p_anneal": "relu", "top_k": "topk",
           "batch_top_k": "batchtopk", "jumprelu": "jumprelu", "gated": "gated", "gated_anneal": "gated",
           "matryoshka": "matryoshka"}


@pytest.mark.parametrize("trainer_name", DL_TRAINERS)
def test_dictionary_learning_checkpoint_loads_and_matches(tmp_path: Path, trainer_name: str) -> None:
    trainer = _dl_trainer(trainer_name)
    _randomise(trainer.ae)
    if hasattr(trainer.ae, "threshold") and trainer.ae.threshold.dim() == 0:  # batch-top-k: a learned scalar
        trainer.ae.threshold.fill_(0.3)
    _dl_save(trainer, tmp_path / "trainer_0")
    ours = load_sae(tmp_path / "trainer_0")
    assert ours.architecture == DL_ARCH[trainer_name]
    layer = "layer 3" if trainer_name == "gated_anneal" else "resid_post_layer_3"
    assert ours.cfg.source.model == "tiny-lm" and ours.cfg.source.layer == layer
    theirs = _dl_from_pretrained(trainer, tmp_path / "trainer_0")  # normalises an AutoEncoder's decoder, as we do
    x = _x()
    with torch.no_grad():
        f = ours.encode(x)
        _close(f, theirs.encode(x))
        _close(ours.decode(f), theirs(x))
        assert (f > 0).any() and (f == 0).any()


def test_dictionary_learning_pickle_with_code_is_refused(tmp_path: Path, run_cli) -> None:
    trainer = _dl_trainer("standard")
    _dl_save(trainer, tmp_path / "trainer_0")
    torch.save({"encoder.weight": torch.zeros(2, 2), "evil": Path("/")}, tmp_path / "trainer_0" / "ae.pt")
    code, _, err = run_cli("import", str(tmp_path / "trainer_0"), "--out", str(tmp_path / "o"))
    assert code == 1 and "weights_only" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("arch", "hyper"), [("relu", {}), ("topk", {"k": 5}), ("batchtopk", {"k": 5}),
                                             ("jumprelu", {}), ("gated", {}),
                                             ("matryoshka", {"k": 5, "base": "batchtopk", "prefixes": [8, 16, 40]})])
def test_export_dictionary_learning_loads_in_dictionary_learning(tmp_path: Path, run_cli, arch: str, hyper: dict) -> None:
    _peer("dictionary_learning")
    import dictionary_learning.dictionary as dld
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    ckpt = tiny_checkpoint(tmp_path, arch, hyper)
    out = tmp_path / "dl"
    code, _, err = run_cli("export", str(ckpt), "--format", "dictionary_learning", "--out", str(out))
    assert code == 0, err
    classes = {"AutoEncoder": dld.AutoEncoder, "AutoEncoderTopK": AutoEncoderTopK, "BatchTopKSAE": BatchTopKSAE,
               "JumpReluAutoEncoder": dld.JumpReluAutoEncoder, "GatedAutoEncoder": dld.GatedAutoEncoder,
               "MatryoshkaBatchTopKSAE": MatryoshkaBatchTopKSAE}
    cls = classes[json.loads((out / "config.json").read_text())["trainer"]["dict_class"]]
    theirs = cls.from_pretrained(str(out / "ae.pt")) if cls is dld.JumpReluAutoEncoder else \
        cls.from_pretrained(out / "ae.pt")
    ours = load_sae(ckpt)
    x = torch.randn(32, ours.d_in) * 2
    with torch.no_grad():
        _close(ours.decode(ours.encode(x)), theirs(x))
        if cls is not dld.AutoEncoder:  # AutoEncoder.from_pretrained rescales codes to unit decoder norms
            _close(ours.encode(x), theirs.encode(x))
    # and back: importing the export gives the same SAE
    with torch.no_grad():
        _close(load_sae(out).decode(load_sae(out).encode(x)), ours.decode(ours.encode(x)))


# ---------------------------------------------------------------- saev


def test_saev_checkpoint_loads_and_matches(tmp_path: Path, run_cli) -> None:
    _peer("saev")
    from saev import config, nn

    sae = nn.SparseAutoencoder(config.SparseAutoencoder(d_vit=D_IN, exp_factor=D_SAE // D_IN, seed=0))
    _randomise(sae)
    nn.dump(str(tmp_path / "run1" / "sae.pt"), sae)
    x = _x()
    with torch.no_grad():
        x_hat, f_theirs, _ = sae(x)
    for path in (tmp_path / "run1", tmp_path / "run1" / "sae.pt"):  # the folder or the file itself
        ours = load_sae(path)
        assert ours.architecture == "relu" and ours.d_sae == D_SAE
        with torch.no_grad():
            _close(ours.encode(x), f_theirs)
            _close(ours(x), x_hat)
    code, _, err = run_cli("import", str(tmp_path / "run1" / "sae.pt"), "--out", str(tmp_path / "conv"))
    assert code == 0, err
    doc = json.loads((tmp_path / "conv" / "cfg.json").read_text())
    assert doc["provenance"]["format"] == "saev" and doc["provenance"]["peer_config"]["d_vit"] == D_IN


# ---------------------------------------------------------------- unknown and ambiguous


def test_unknown_and_ambiguous_directories(tmp_path: Path, run_cli) -> None:
    from sae_core.errors import CheckpointError

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "cfg.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match=r"not an SAE checkpoint in any format we read.*sparsify.*dictionary_learning.*saev"):
        load_sae(tmp_path / "junk")
    code, _, err = run_cli("import", str(tmp_path / "junk"), "--out", str(tmp_path / "o"))
    assert code == 1 and "in any format we read" in err and len(err.strip().splitlines()) == 1
    both = tiny_checkpoint(tmp_path, "topk", {"k": 5})  # ours, plus a dictionary_learning ae.pt beside it
    (both / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoder"}}))
    torch.save({"bias": torch.zeros(D_IN)}, both / "ae.pt")
    with pytest.raises(CheckpointError, match="ambiguous"):
        load_sae(both)


def test_viewer_shows_the_line_for_a_foreign_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page itself (not only `sae view`) answers with the one line instead of a traceback."""
    from helpers.viewer import APP
    from streamlit.testing.v1 import AppTest

    _sparsify_coder(tmp_path, "layers.0")
    monkeypatch.setenv("SAE_VIEWER_RUN", str(tmp_path / "layers.0"))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    assert "sparsify" in at.error[0].value and "sae import" in at.error[0].value


def test_imported_sparsify_sae_works_in_analyze_viewer_and_upload(tmp_path: Path, run_cli,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's end-to-end: a sparsify checkpoint, imported, then analysed, viewed and uploaded."""
    from helpers.stores import gaussian_cache
    from helpers.viewer import APP
    from streamlit.testing.v1 import AppTest

    cache = gaussian_cache(tmp_path / "cache", n=1000, d=D_IN)
    _sparsify_coder(tmp_path, "layers.1")
    conv = tmp_path / "conv"
    code, _, err = run_cli("import", str(tmp_path / "layers.1"), "--out", str(conv), "--layer", "l1", "--model", "gauss0")
    assert code == 0, err
    code, _, err = run_cli("analyze", str(conv), "--data", str(cache), "-q")
    assert code == 0, err
    stats = json.loads((conv / "feature_stats.json").read_text())
    assert stats  # the analysis ran on the imported SAE
    monkeypatch.setenv("SAE_VIEWER_RUN", str(conv))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["arch"]) == ["topk"]
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as c
    from helpers.fake_hub import FakeHub

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    with FakeHub() as server:
        code, _, err = run_cli("upload", str(conv), "--repo", "alice/imported", "--endpoint", server.endpoint)
        assert code == 0, err
        code, _, err = run_cli("download", "alice/imported", "--out", str(tmp_path / "dl"), "--endpoint", server.endpoint)
        assert code == 0, err
    x = _x()
    with torch.no_grad():
        _close(load_sae(next(p for p in (tmp_path / "dl").rglob("cfg.json")).parent).encode(x), load_sae(conv).encode(x))


# ---------------------------------------------------------------- SAELens variants beyond test_interop.py


def _saelens_round(tmp_path: Path, theirs, *, inference: bool = False) -> tuple[object, object]:
    """Write with SAELens itself, read back with SAELens and with us."""
    from sae_lens import SAE

    _randomise(theirs)
    if inference:
        theirs.save_inference_model(str(tmp_path / "sl"))
    else:
        theirs.save_model(str(tmp_path / "sl"))
    return SAE.load_from_disk(str(tmp_path / "sl"), device="cpu"), load_sae(tmp_path / "sl")


@pytest.mark.parametrize("kind", ["batchtopk", "matryoshka_batchtopk"])
def test_saelens_batchtopk_training_saes_load(tmp_path: Path, kind: str) -> None:
    """SAELens saves a (Matryoshka) BatchTopK training SAE as a JumpReLU with its learned threshold."""
    _peer("sae_lens")
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )

    if kind == "batchtopk":
        sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=4))
    else:
        sae = MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=D_IN, d_sae=D_SAE, k=4, matryoshka_widths=[8, 16, D_SAE]))
    with torch.no_grad():
        sae.topk_threshold.fill_(0.2)
    theirs, ours = _saelens_round(tmp_path, sae, inference=True)
    assert ours.architecture == "jumprelu"
    x = _x()
    with torch.no_grad():
        f = ours.encode(x)
        _close(f, theirs.encode(x))
        _close(ours.decode(f), theirs.decode(theirs.encode(x)))
        assert (f > 0).any() and (f == 0).any()


@pytest.mark.parametrize("kind", ["transcoder", "jumprelu_transcoder"])
def test_saelens_transcoders_load(tmp_path: Path, kind: str) -> None:
    _peer("sae_lens")
    from sae_lens.saes.transcoder import (
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
        Transcoder,
        TranscoderConfig,
    )

    cls, cfg_cls = (Transcoder, TranscoderConfig) if kind == "transcoder" else (JumpReLUTranscoder, JumpReLUTranscoderConfig)
    theirs, ours = _saelens_round(tmp_path, cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, d_out=6, apply_b_dec_to_input=False)))
    assert ours.is_transcoder and ours.d_out == 6
    x = _x()
    with torch.no_grad():
        f = ours.encode(x)
        _close(f, theirs.encode(x))
        _close(ours.decode(f), theirs.decode(theirs.encode(x)))


def test_saelens_skip_transcoder_is_refused(tmp_path: Path) -> None:
    _peer("sae_lens")
    from sae_core.errors import CheckpointError
    from sae_lens.saes.transcoder import SkipTranscoder, SkipTranscoderConfig

    SkipTranscoder(SkipTranscoderConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_IN, apply_b_dec_to_input=False)).save_model(str(tmp_path / "sk"))
    with pytest.raises(CheckpointError, match="skip_transcoder is not supported"):
        load_sae(tmp_path / "sk")


def test_download_sparsify_and_dictionary_learning_repos(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub repos in a peer's layout (sparsify: one folder per hook) download and load as they are."""
    import huggingface_hub.constants as c
    from helpers.fake_hub import FakeHub

    coders = {h: _sparsify_coder(tmp_path / "sp", h) for h in ("layers.1", "layers.2")}
    trainer = _dl_trainer("top_k")
    _randomise(trainer.ae)
    _dl_save(trainer, tmp_path / "dl" / "trainer_0")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    x = _x()
    with FakeHub() as hub:
        for repo, root in (("eleuther/sae-tiny", tmp_path / "sp"), ("marks/dl-tiny", tmp_path / "dl")):
            files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
            hub.repos[repo] = {"files": files, "sha": "1" * 40, "private": False}
        code, _, err = run_cli("download", "eleuther/sae-tiny", "--subfolder", "layers.2", "--out", str(tmp_path / "d1"),
                               "--endpoint", hub.endpoint)
        assert code == 0, err
        assert "sae import" in err and not (tmp_path / "d1" / "layers.1").exists()
        with torch.no_grad():
            _close(load_sae(tmp_path / "d1" / "layers.2").encode(x), _sparsify_dense(coders["layers.2"], x))
        code, _, err = run_cli("download", "marks/dl-tiny", "--sae", "trainer_0", "--out", str(tmp_path / "d2"),
                               "--endpoint", hub.endpoint)
        assert code == 0, err
        with torch.no_grad():
            _close(load_sae(tmp_path / "d2" / "trainer_0").encode(x), trainer.ae.encode(x))
        code, _, err = run_cli("download", "eleuther/sae-tiny", "--sae", "layers.9", "--out", str(tmp_path / "d3"),
                               "--endpoint", hub.endpoint)
        assert code == 1 and "has no SAE 'layers.9'" in err
