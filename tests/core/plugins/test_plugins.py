"""The plugin system: built-ins, entry-point plugins, restriction, duplicates, broken plugins.

Every hook of ``sae_core.hookspecs`` is exercised here or by the example plugin (register_adapters,
register_stores, register_architectures, register_analyses, register_datasets, register_exporters,
register_commands).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sae_core import hookimpl, hookspecs, plugins
from sae_core.errors import PluginError, UnknownComponentError
from sae_core.plugins import PluginManager

ROOT = Path(__file__).resolve().parents[3]


def _sae(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sae_core", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_builtin_store_registered() -> None:
    manager = PluginManager(entry_points=False)
    assert "sae_core.stores.local.plugin" in manager.infos
    assert manager.registry.get("store", "local").plugin == "sae_core.stores.local.plugin"


def test_example_plugin_loads_through_entry_point() -> None:
    eps = {ep.name: ep.value for ep in md.entry_points(group="sae")}
    assert eps.get("example") == "sae_example_plugin.plugin"
    manager = PluginManager()
    info = manager.infos["example"]
    assert not info.builtin and info.version == "0.4.0"
    assert set(info.hooks) == {f"register_{k}" for k in ("adapters", "analyses", "architectures", "commands", "datasets",
                                                       "exporters", "stores")}
    assert manager.components("example") == {
        "adapter": ["mlp", "patches"],
        "store": ["npz"],
        "architecture": ["signed-topk"],
        "analysis": ["decoder-norms", "sign-balance"],
        "dataset": ["image/shapes", "vector/gaussian"],
        "exporter": ["npz"],
        "command": ["example-hello"],
    }


def test_sae_plugins_all_lists_builtin_and_example(run_cli) -> None:
    code, out, _ = run_cli("plugins", "--all")
    assert code == 0
    data = json.loads(out)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["sae_core.stores.local.plugin"]["components"] == {"store": ["local"]}
    assert by_name["example"]["components"]["adapter"] == ["mlp", "patches"]
    code, out, _ = run_cli("plugins")
    names = {p["name"] for p in json.loads(out)["plugins"]}
    assert "example" in names and "sae_core.stores.local.plugin" not in names


def test_sae_load_plugins_restricts_entry_points() -> None:
    res = _sae("plugins", env={"SAE_LOAD_PLUGINS": "text"})
    assert res.returncode == 0, res.stderr
    names = {p["name"] for p in json.loads(res.stdout)["plugins"]}
    assert "example" not in names
    assert "text" in names


def test_broken_plugin_reported_by_name(monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    real = md.entry_points

    def fake_entry_points(**kw):
        eps = list(real(**kw))
        if kw.get("group") == "sae":
            eps.append(md.EntryPoint(name="broken-thing", value="sae_no_such_module_xyz", group="sae"))
        return eps

    monkeypatch.setattr(plugins.md, "entry_points", fake_entry_points)
    plugins.get_manager.cache_clear()
    try:
        code, out, err = run_cli("plugins")
        assert code == 0
        assert "sae_no_such_module_xyz" in json.loads(out)["failed"]["broken-thing"]
        assert "broken-thing" in err and "Traceback" not in err
    finally:
        plugins.get_manager.cache_clear()


class _DupA:
    @staticmethod
    @hookimpl
    def register_adapters(register):
        register("twin", object, modality="image")


class _DupB:
    @staticmethod
    @hookimpl
    def register_adapters(register):
        register("twin", object, modality="image")


def test_duplicate_names_error_names_both_plugins() -> None:
    manager = PluginManager(entry_points=False, extra=[_DupA, _DupB])
    with pytest.raises(PluginError) as e:
        manager.registry.all("adapter")  # each kind is filled on its first lookup
    assert "_DupA" in str(e.value) and "_DupB" in str(e.value) and "twin" in str(e.value)


class _Datasets:
    @staticmethod
    @hookimpl
    def register_datasets(register):
        register("hf", lambda arg: ("image", arg), modality="image")
        register("hf", lambda arg: ("text", arg), modality="text")


def test_dataset_names_unique_per_modality() -> None:
    registry = PluginManager(entry_points=False, extra=[_Datasets]).registry
    assert registry.get("dataset", "hf", modality="text").build("x") == ("text", "x")
    assert registry.get("dataset", "hf", modality="image").build("y") == ("image", "y")


class _Arch:
    @staticmethod
    @hookimpl
    def register_architectures(register):
        register("my-arch", dict, description="a third-party architecture")


def test_register_architectures_hook() -> None:
    registry = PluginManager(entry_points=False, extra=[_Arch]).registry
    assert registry.get("architecture", "my-arch").plugin == "_Arch"


def test_register_stores_hook() -> None:
    class _Store:
        @staticmethod
        @hookimpl
        def register_stores(register):
            register("s3", dict)

    registry = PluginManager(entry_points=False, extra=[_Store]).registry
    assert set(registry.names("store")) == {"local", "saev", "saelens-cache", "s3"}  # read in place (interop)


def test_unknown_component_lists_installed() -> None:
    registry = PluginManager().registry
    with pytest.raises(UnknownComponentError) as e:
        registry.get("adapter", "nope")
    assert "unknown adapter 'nope'" in str(e.value) and "mlp" in str(e.value)


def test_plugin_command_and_unknown_adapter_cli(run_cli) -> None:
    code, out, _ = run_cli("example-hello", "--name", "tester")
    assert code == 0 and "hello tester" in out
    code, _, err = run_cli("cache", "--adapter", "nope", "--model", "m", "--layers", "0",
                           "--data", "gaussian:4", "--out", "/tmp/unused")
    assert code == 1
    assert err.startswith("error: unknown adapter 'nope'; installed:") and "mlp" in err
    assert len(err.strip().splitlines()) == 1


def test_every_hook_documented_and_tested() -> None:
    hooks = [name for name in vars(hookspecs.SAEHookSpecs) if name.startswith("register_")]
    assert len(hooks) == 7
    docs = (ROOT / "docs" / "plugins.md").read_text()
    this_file = Path(__file__).read_text()
    for hook in hooks:
        assert f"`{hook}" in docs, f"{hook} is not documented in docs/plugins.md"
        assert f"def {hook}(" in this_file or f"def {hook}(" in (ROOT / "tests/example_plugin/src/sae_example_plugin/plugin.py").read_text()


def test_a_plain_install_lists_only_shipped_components() -> None:
    """The example plugin is a test fixture (conftest puts it on the path): a user's install —
    the workspace without the tests' path — lists only the components the packages ship."""
    import json
    import os
    import subprocess
    import sys

    site, src = os.environ["SAE_TEST_PLUGIN_SITE"], str(Path(__file__).resolve().parents[2] / "example_plugin" / "src")
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in (site, src)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    env.pop("SAE_LOAD_PLUGINS", None)
    res = subprocess.run([sys.executable, "-m", "sae_core", "plugins"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    names = {p["name"] for p in doc["plugins"]}
    assert "example" not in names and not doc["failed"], names
    components = {c for p in doc["plugins"] for kind in p["components"].values() for c in kind}
    assert not components & {"example-hello", "decoder-norms", "mlp", "patches", "npz", "signed-topk"}, components
    helped = subprocess.run([sys.executable, "-m", "sae_core", "--help"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert "example-hello" not in helped.stdout and "quickstart" in helped.stdout
