"""Plugin discovery and the component registry.

Built-in components live in ordinary plugin modules listed in :data:`DEFAULT_PLUGINS`; third-party
plugins are discovered from the entry-point group ``sae``. ``SAE_LOAD_PLUGINS=a,b`` restricts the
entry-point plugins that load (built-ins always load) which is the escape hatch when two installed
plugins clash. A plugin that fails to import is recorded by name in
:attr:`PluginManager.failures` and reported, never a traceback: one broken optional plugin must not
take the whole CLI down.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy

from sae_core import hookspecs
from sae_core.errors import PluginError
from sae_core.registry import KINDS, Component, Registry

ENTRY_POINT_GROUP = "sae"
ENV_LOAD = "SAE_LOAD_PLUGINS"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "sae_core.stores.local.plugin",
    "sae_core.archs.plugin",
    "sae_core.analyses.plugin",
    "sae_core.interop.plugin",
    "sae_core.commands.plugin",
)

CATALOGUE_HOOKS: dict[str, str] = {
    "register_adapters": "adapter",
    "register_stores": "store",
    "register_architectures": "architecture",
    "register_analyses": "analysis",
    "register_datasets": "dataset",
    "register_exporters": "exporter",
}


@dataclass
class PluginInfo:
    """What ``sae plugins`` reports about one loaded plugin."""

    name: str
    module: str
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    distribution: str | None = None  # the installed package that provides it (entry-point plugins)


class PluginManager:
    """Loads plugins and builds the :class:`Registry` from their catalogue hooks."""

    def __init__(self, *, entry_points: bool = True, extra: list[Any] | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs.SAEHookSpecs)
        self.infos: dict[str, PluginInfo] = {}
        self.failures: dict[str, str] = {}
        core_version = _dist_version("sae-core")
        for module_name in DEFAULT_PLUGINS:
            self._register(module_name, importlib.import_module(module_name), core_version, builtin=True)
        if entry_points:
            self._load_entry_points()
        for obj in extra or []:
            self._register(getattr(obj, "__name__", repr(obj)), obj, None, builtin=False)
        self._registry: Registry | None = None
        self._commands: dict[str, list[str]] | None = None  # plugin -> commands, once add_commands ran

    def _register(self, name: str, obj: Any, version: str | None, *, builtin: bool,
                  distribution: str | None = None) -> None:
        if self.pm.has_plugin(name) or self.pm.is_registered(obj):
            return
        try:
            self.pm.register(obj, name=name)
        except (pluggy.PluginValidationError, ValueError) as e:
            self.failures[name] = f"invalid plugin: {e}"
            return
        hooks = sorted(h.name for h in self.pm.get_hookcallers(obj) or [])
        self.infos[name] = PluginInfo(
            name=name, module=getattr(obj, "__name__", repr(obj)), version=version, builtin=builtin, hooks=hooks,
            distribution=distribution,
        )

    def _load_entry_points(self) -> None:
        wanted_env = os.environ.get(ENV_LOAD)
        wanted = None if wanted_env is None else {w.strip() for w in wanted_env.split(",") if w.strip()}
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if wanted is not None and ep.name not in wanted:
                continue
            version = ep.dist.version if ep.dist is not None else None
            try:
                obj = ep.load()
            except Exception as e:  # a broken third-party plugin must not break the CLI
                self.failures[ep.name] = f"{type(e).__name__}: {e}"
                continue
            dist = ep.dist.metadata["Name"] if ep.dist is not None else None
            self._register(ep.name, obj, version, builtin=False, distribution=dist)

    @property
    def registry(self) -> Registry:
        """The registry; each kind is filled on its first lookup by calling its catalogue hook once."""
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        """A registry whose kinds are filled on first use, each by calling its catalogue hook."""
        registry = Registry(loader=lambda kind: self._load_kind(registry, kind))
        return registry

    def _load_kind(self, registry: Registry, kind: str) -> None:
        for hook_name, hook_kind in CATALOGUE_HOOKS.items():
            if hook_kind != kind:
                continue
            caller = getattr(self.pm.hook, hook_name)
            for impl in reversed(caller.get_hookimpls()):
                plugin_name = impl.plugin_name
                register = _make_register(registry, kind, plugin_name)
                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as e:
                    raise PluginError(
                        f"plugin {plugin_name!r} failed in {hook_name}: {type(e).__name__}: {e}; "
                        f"fix or uninstall it, or exclude it with {ENV_LOAD}"
                    ) from e

    def add_commands(self, app: Any) -> None:
        """Let every plugin add its sub-commands to the Typer ``app`` (in pluggy's call order),
        recording which plugin added which command for ``sae plugins``."""
        commands: dict[str, list[str]] = {}
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            before = _command_names(app)
            impl.function(app=app)
            added = [n for n in _command_names(app) if n not in before]
            if added:
                commands[impl.plugin_name] = sorted(added)
        self._commands = commands

    def commands(self, plugin: str) -> list[str]:
        """Names of the ``sae`` sub-commands ``plugin`` adds."""
        if self._commands is None:
            import typer

            self.add_commands(typer.Typer())
        return (self._commands or {}).get(plugin, [])

    def components(self, plugin: str) -> dict[str, list[str]]:
        """Component keys registered by ``plugin``, grouped by kind (``command``: its CLI commands)."""
        out: dict[str, list[str]] = {}
        for kind in KINDS:
            keys = [c.key for c in self.registry.all(kind) if c.plugin == plugin]
            if keys:
                out[kind] = keys
        commands = self.commands(plugin)
        if commands:
            out["command"] = commands
        return out


def _command_names(app: Any) -> list[str]:
    """The sub-command (and sub-group) names of a Typer app, as the CLI spells them."""
    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands if c.callback]
    names += [g.name or g.typer_instance.info.name for g in app.registered_groups]
    return [n for n in names if n]


def _make_register(registry: Registry, kind: str, plugin: str) -> Callable[..., None]:
    def register(name: str, factory: Callable[..., Any], *, description: str = "", **attrs: Any) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {kind} with an invalid name {name!r}")
        registry.add(Component(kind, name, factory, plugin, description or (factory.__doc__ or "").strip().split("\n")[0], attrs))

    return register


def _dist_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@cache
def get_manager() -> PluginManager:
    """The process-wide plugin manager (tests may call ``get_manager.cache_clear()``)."""
    manager = PluginManager()
    for name, why in manager.failures.items():
        print(f"warning: plugin {name!r} failed to load and was skipped: {why}", file=sys.stderr)
    return manager


def get_registry() -> Registry:
    """Shortcut for ``get_manager().registry``."""
    return get_manager().registry


def get_component(kind: str, name: str, *, modality: str | None = None) -> Component:
    """Look up a component; unknown names raise an error listing the installed ones."""
    return get_registry().get(kind, name, modality=modality)
