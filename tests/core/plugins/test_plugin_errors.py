"""A plugin's bug or bad return value is one line naming the plugin (issue 24, item 8).

sae calls plugin code at a few places (``sae_core.plugin_calls``): an adapter's ``make_inputs``,
``cached_inputs``, ``run_with_hooks``, ``spec`` and ``iter_batches``; a store's reader and writer;
an analysis's ``run``; an exporter's ``check``/``write``. Each misbehaviour is injected into the
example plugin (tests/example_plugin, registered through its entry point as plugin ``example`` of
distribution ``sae-example-plugin``) and must come out of the CLI as exactly one ``error:`` line
naming the component, the plugin and the call — never a traceback. ``sae features --image``
hands the adapter the loaded RGB image, not the path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SWEEP = """
[data]
layer = "mix"
tokens = "patch"
batch_size = 32
[train]
steps = 10
log_every = 5
[sae]
arch = "topk"
k = 4
exp_factor = 2
"""
WHO = "adapter 'patches' of plugin 'example' (sae-example-plugin"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """A 16-image cache of the plugin's adapter in the plugin's npz store, a TopK SAE on it, an image."""
    from conftest import cli_runner
    from sae_example_plugin.shapes import ShapesDataset

    sae = cli_runner()
    root = tmp_path_factory.mktemp("plugin-errors")
    code, out, err = sae("cache", "--adapter", "patches", "--model", "toy", "--layers", "mix", "--data", "shapes:16",
                         "--store", "npz", "--out", str(root / "caches"), "-q")
    assert code == 0, err
    cache = Path(out.strip().splitlines()[-1])
    (root / "sweep.toml").write_text(SWEEP)
    code, _, err = sae("train", "--data", str(cache), "--sweep", str(root / "sweep.toml"), "--out", str(root / "run"),
                       "--val-fraction", "0", "-q")
    assert code == 0, err
    image = root / "shape.png"
    ShapesDataset("1")[0].data.save(image)
    return {"root": root, "cache": cache, "run": root / "run", "ckpt": root / "run" / "topk-k4", "image": image}


def _one_line(code: int, err: str, *parts: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def _features(run_cli, made: dict[str, Path], out: str = "maps") -> tuple[int, str, str]:
    return run_cli("features", str(made["ckpt"]), "--image", str(made["image"]), "--top", "2",
                   "--out", str(made["root"] / out), "--json")


def test_features_image_hands_the_adapter_a_pil_image(made, run_cli, monkeypatch) -> None:
    from PIL import Image
    from sae_example_plugin.patches import PatchAdapter

    seen: list[object] = []
    original = PatchAdapter.make_inputs

    def spy(self, examples):
        seen.extend(examples)
        return original(self, examples)

    monkeypatch.setattr(PatchAdapter, "make_inputs", spy)
    code, out, err = _features(run_cli, made)
    assert code == 0, err
    assert len(seen) == 1 and isinstance(seen[0], Image.Image) and seen[0].mode == "RGB" and seen[0].size == (48, 40)
    doc = json.loads(out)
    assert len(doc["tokens"]) == 16 and doc["tokens"][5]["patch"] == [1, 1]  # the ImageGeometry grid, row by row
    assert all(Path(p).is_file() for p in doc["heatmaps"])


def test_features_image_that_is_not_an_image(made, run_cli, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code, _, err = run_cli("features", str(made["ckpt"]), "--image", str(bad), "--out", str(tmp_path / "m"))
    _one_line(code, err, "cannot read image", "notes.png", "PNG or JPEG")


def test_adapter_attribute_error_is_one_line_naming_the_plugin(made, run_cli, monkeypatch) -> None:
    """The author's bug of gap (a): an adapter that treats its input as something it is not."""
    from sae_example_plugin.patches import PatchAdapter

    def make_inputs(self, examples):
        return examples[0].read()  # an image has no .read(): AttributeError

    monkeypatch.setattr(PatchAdapter, "make_inputs", make_inputs)
    line = _one_line(*_features(run_cli, made)[::2], WHO, "make_inputs failed with AttributeError", "read",
                     "expected ModelInputs for a list of PIL images", "test_plugin_errors.py:")
    assert "bug in the plugin" in line


@pytest.mark.parametrize(("method", "bad", "says"), [
    ("make_inputs", lambda self, examples: [np.zeros(3)], "make_inputs returned list, expected ModelInputs"),
    ("run_with_hooks", lambda self, inputs, hooks, output=True: inputs.data,
     "run_with_hooks returned Tensor, expected ModelOutput"),
])
def test_adapter_bad_return_value(made, run_cli, monkeypatch, method, bad, says) -> None:
    from sae_example_plugin.patches import PatchAdapter

    monkeypatch.setattr(PatchAdapter, method, bad)
    _one_line(*_features(run_cli, made)[::2], WHO, says)


def test_cached_inputs_inconsistent_with_the_cache(made, run_cli, monkeypatch) -> None:
    """``valid`` of the wrong width (gap b: it must be the cache's ``index["valid"]``)."""
    from sae_example_plugin.patches import PatchAdapter

    original = PatchAdapter.cached_inputs

    def cached_inputs(self, index, dataset=None):
        inputs = original(self, index, dataset)
        inputs.valid = np.ones((len(index), 3), dtype=bool)
        return inputs

    monkeypatch.setattr(PatchAdapter, "cached_inputs", cached_inputs)
    code, _, err = run_cli("ablate", str(made["ckpt"]), "--features", "0")
    _one_line(code, err, WHO, "cached_inputs returned inconsistent ModelInputs", "kinds has 16 entries but valid has 3")


def test_iter_batches_bug_while_caching(made, run_cli, monkeypatch, tmp_path: Path) -> None:
    from sae_example_plugin.patches import PatchAdapter

    def iter_batches(self, dataset, *, start=0, batch_size=64, num_workers=0):
        yield {"acts": None}

    monkeypatch.setattr(PatchAdapter, "iter_batches", iter_batches)
    code, _, err = run_cli("cache", "--adapter", "patches", "--model", "toy", "--layers", "mix", "--data", "shapes:4",
                           "--out", str(tmp_path / "c"), "-q")
    _one_line(code, err, WHO, "iter_batches returned dict, expected ActivationBatch")

    def broken(self, dataset, *, start=0, batch_size=64, num_workers=0):
        raise KeyError("pixels")
        yield

    monkeypatch.setattr(PatchAdapter, "iter_batches", broken)
    code, _, err = run_cli("cache", "--adapter", "patches", "--model", "toy", "--layers", "mix", "--data", "shapes:4",
                           "--out", str(tmp_path / "c2"), "-q")
    _one_line(code, err, WHO, "iter_batches failed with KeyError")


def test_store_reader_bug(made, run_cli, monkeypatch) -> None:
    from sae_example_plugin.npz_store import NpzStore

    def open_reader(self, path, **options):
        return {"path": path}

    monkeypatch.setattr(NpzStore, "open_reader", open_reader)
    code, _, err = run_cli("info", str(made["cache"]))
    _one_line(code, err, "store 'npz' of plugin 'example' (sae-example-plugin", "open_reader returned dict",
              "expected an ActivationReader")


def test_analysis_bugs(made, run_cli, monkeypatch) -> None:
    from sae_example_plugin.analysis import SignBalance

    monkeypatch.setattr(SignBalance, "run", lambda self, ctx: ["not", "a", "dict"])
    code, _, err = run_cli("analyze", str(made["run"]), "--only", "sign-balance", "-q")
    _one_line(code, err, "analysis 'sign-balance' of plugin 'example'", "run(ctx) returned list",
              "expected a JSON-able dict")
    monkeypatch.setattr(SignBalance, "run", lambda self, ctx: 1 / 0)
    code, _, err = run_cli("analyze", str(made["run"]), "--only", "sign-balance", "-q")
    _one_line(code, err, "analysis 'sign-balance' of plugin 'example'", "run(ctx) failed with ZeroDivisionError")


def test_exporter_bug_writes_nothing(made, run_cli, monkeypatch) -> None:
    from sae_example_plugin.export import NpzExporter

    def write(self, checkpoint, cfg, out):
        (out / "half.npz").write_bytes(b"")
        raise TypeError("savez() got an unexpected keyword argument")

    monkeypatch.setattr(NpzExporter, "write", write)
    out = made["root"] / "exported"
    code, _, err = run_cli("export", str(made["run"]), "--format", "npz", "--out", str(out))
    _one_line(code, err, "exporter 'npz' of plugin 'example'", "write(checkpoint, cfg, out) failed with TypeError")
    assert not out.exists()


def test_builtin_components_keep_their_traceback() -> None:
    """A built-in's unexpected exception is a bug in sae: not disguised as a plugin's."""
    from sae_core.plugin_calls import describe, guarded

    label, builtin = describe("store", "local")
    assert builtin and label.startswith("store 'local' (built in")
    with pytest.raises(ZeroDivisionError), guarded("store", "local", "open_reader"):
        1 / 0  # noqa: B018
    from sae_core import PluginError

    match = r"^adapter 'nowhere': make_inputs failed with ValueError: x at "
    with pytest.raises(PluginError, match=match), guarded("adapter", "nowhere", "make_inputs"):  # not registered
        raise ValueError("x")
