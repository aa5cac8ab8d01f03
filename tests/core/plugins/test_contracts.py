"""The contracts of issue 14: public names, one owner per format, one durable-write helper.

- ``sae_core.__all__`` is the public API; it loads lazily (``import sae_core`` and ``sae --help``
  import no torch) and the example plugin, the viewer and the quickstart import nothing else;
- file names of checkpoints and runs are spelled only in ``sae_core.checkpoint.cfg``, and ``cfg.json`` is
  ``SAECheckpointConfig`` (lenient for old files, strict on request);
- the checkpoint loader and the SAELens interop do not import each other in a circle;
- every file the project writes goes through ``sae_core.io``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CORE = ROOT / "packages" / "sae-core" / "src" / "sae_core"


def _py(*roots: Path) -> list[Path]:
    return [p for r in roots for p in ([r] if r.is_file() else sorted(r.rglob("*.py")))]


def test_public_api_resolves_lazily_without_torch() -> None:
    code = (
        "import sys, sae_core\n"
        "assert 'torch' not in sys.modules\n"
        "from sae_core import hookimpl, ModelAdapter, ImageGeometry, Dataset, CacheMetadata, filenames, read_cfg\n"
        "assert 'torch' not in sys.modules, 'protocols of adapters/datasets/stores must not import torch'\n"
        "from sae_core.cli import build_app\n"
        "build_app()\n"
        "assert 'torch' not in sys.modules, 'assembling the CLI (sae --help) must not import torch'\n"
        "missing = [n for n in sae_core.__all__ if not hasattr(sae_core, n)]\n"
        "assert not missing, missing\n"
        "print(len(sae_core.__all__))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) > 60


def test_all_lists_exactly_the_lazy_names() -> None:
    import sae_core

    assert set(sae_core.__all__) == set(sae_core._WHERE) | {"__version__"}
    for name in ("load_sae", "open_reader", "open_writer", "run_training", "Architecture", "Bank", "TrainOutput",
                 "ActivationReader", "ModelAdapter", "Analysis", "Exporter", "TrainConfig", "SAECheckpointConfig",
                 "atomic_write_json", "atomic_write_bytes", "cache_activations", "analyse_run", "firing"):
        assert name in sae_core.__all__, name


@pytest.mark.parametrize("where", [
    "tests/example_plugin/src/sae_example_plugin",
    "packages/sae-viewer/src/sae_viewer",
    "packages/sae-text/src/sae_text/quickstart.py",
])
def test_plugins_viewer_and_quickstart_use_only_public_names(where: str) -> None:
    import sae_core

    public = set(sae_core.__all__)
    for path in _py(ROOT / where):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sae_core"):
                assert node.module == "sae_core", f"{path.name}: from {node.module} import ... (use `from sae_core import`)"
                bad = [a.name for a in node.names if a.name not in public]
                assert not bad, f"{path.name} imports non-public {bad}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("sae_core.") for a in node.names), f"{path.name}: import sae_core.x"


FILE_NAMES = {"cfg.json", "sae.safetensors", "metrics.jsonl", "sweep.json", "config.json"}
#: "config.json" also names Hugging Face model configs, which are not ours
OTHER_CONFIG_JSON = {"minilm.py", "hf_model.py"}  # a Hugging Face model's config.json


def test_checkpoint_file_names_are_spelled_only_in_the_filenames_module() -> None:
    offenders = []
    for path in _py(ROOT / "packages"):
        if path.name == "filenames.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in FILE_NAMES:
                if node.value == "config.json" and path.name in OTHER_CONFIG_JSON:
                    continue
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, "use the names of sae_core.checkpoint.filenames: " + ", ".join(offenders)


def test_checkpoint_and_interop_do_not_import_each_other() -> None:
    ckpt = CORE / "checkpoint"
    for path in _py(CORE / "interop", ckpt / "sae.py", ckpt / "weights.py", ckpt / "cfg.py", ckpt / "filenames.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("sae_core.checkpoint", "sae_core.checkpoint.directory"), \
                    f"{path.name} imports {node.module}"


#: calls that write files by themselves; only sae_core.io (and weights.py, inside atomic_path) may
WRITERS = {"save_file", "write_text", "write_bytes", "json.dump", "np.save", "np.savez", "torch.save", "os.replace",
           "os.rename", "shutil.move"}


def test_every_writer_goes_through_sae_core_io() -> None:
    offenders = []
    for path in _py(ROOT / "packages", ROOT / "tests" / "example_plugin"):
        if path.name == "io.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            name = func.rsplit(".", 1)[-1]
            if name in WRITERS or func in WRITERS:
                in_memory = any(isinstance(a, ast.Name) and a.id == "buf" for a in node.args)  # np.savez(BytesIO)
                if not in_memory and not (path.name == "weights.py" and name == "save_file"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {func}")
            if name == "open" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) \
                    and any(m in str(node.args[1].value) for m in "wax"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} open(..., {node.args[1].value!r})")
    assert not offenders, "write through sae_core.io (atomic_write_*, atomic_path): " + ", ".join(offenders)


def test_cfg_json_is_read_leniently_and_validated_strictly(tmp_path: Path) -> None:
    from sae_core import ConfigError, SAECheckpointConfig, read_cfg

    old = {"format": "sae", "format_version": 1, "name": "topk-k4", "architecture": "topk", "d_in": 8, "d_sae": 32,
           "hyper": {"k": 4}, "normalization": {"folded": True, "scale": 2.0},
           "source": {"layer": "blocks.0", "tokens": "cls", "from_the_future": 1}, "a_newer_key": [1]}
    (tmp_path / "cfg.json").write_text(json.dumps(old))
    cfg = read_cfg(tmp_path)  # written before non_negative_codes existed, and with keys we do not know
    assert cfg.non_negative_codes is True and cfg.source.layer == "blocks.0" and cfg.normalization.scale == 2.0
    assert cfg.train.lr is None and cfg.metrics == {}
    with pytest.raises(ConfigError, match="a_newer_key"):
        SAECheckpointConfig.from_json(old, strict=True)
    with pytest.raises(ConfigError, match="d_in"):
        SAECheckpointConfig.from_json({**old, "d_in": 0})
    doc = cfg.to_json()
    assert list(doc)[:6] == ["format", "format_version", "name", "architecture", "d_in", "d_sae"]
    assert "imported_from" not in doc["source"] and "a_newer_key" not in doc
    assert SAECheckpointConfig.from_json(doc, strict=True) == cfg


def test_trained_cfg_json_keeps_every_key_of_the_format(tmp_path: Path) -> None:
    """The checkpoint written by the trainer has the keys of format version 1 (plus
    non_negative_codes and the validation split ``val``), so older readers keep reading it."""
    from conftest import cli_runner
    from sae_core import read_cfg

    sae = cli_runner()
    code, out, err = sae("cache", "--adapter", "mlp", "--model", "m", "--layers", "0", "--data", "gaussian:64",
                         "--out", str(tmp_path / "c"), "-q")
    assert code == 0, err
    code, _, err = sae("train", "--data", out.strip().splitlines()[-1], "--out", str(tmp_path / "r"), "--k", "2",
                       "--exp-factor", "1", "--steps", "3", "--batch-size", "16", "-q")
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "topk-k2" / "cfg.json").read_text())
    assert set(doc) == {"format", "format_version", "name", "architecture", "d_in", "d_sae", "hyper",
                        "non_negative_codes", "normalization", "source", "train", "val", "metrics"}
    assert set(doc["source"]) == {"cache", "cache_fingerprint", "adapter", "model", "layer", "layer_index", "tokens",
                                  "d_model", "dataset"}
    assert set(doc["train"]) == {"lr", "steps", "batch_size", "seed", "lr_warmup_steps", "lr_decay_frac",
                                 "sparsity_warmup_steps", "normalize", "world_size", "parallel"}
    assert {"fvu", "l0", "final_tokens"} <= set(doc["metrics"])
    assert doc["source"]["cache_fingerprint"] == Path(doc["source"]["cache"]).name
    assert read_cfg(tmp_path / "r" / "topk-k2").metrics["l0"] == doc["metrics"]["l0"]
