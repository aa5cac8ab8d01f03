"""The component catalogue filled by the catalogue hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sae_core.errors import PluginError, UnknownComponentError

KINDS = ("adapter", "store", "architecture", "analysis", "dataset", "exporter")
#: how messages name a kind where its key is not plain English
LABELS = {"exporter": "export format"}


@dataclass(frozen=True)
class Component:
    """One registered component: what it is, who registered it, and how to build it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Unique key in its kind: datasets are qualified by modality (``image/hf``)."""
        modality = self.attrs.get("modality")
        return f"{modality}/{self.name}" if self.kind == "dataset" and modality else self.name

    def build(self, *args: Any, **kwargs: Any) -> Any:
        return self.factory(*args, **kwargs)


class Registry:
    """Components by kind and key; lookups of unknown names list what is installed.

    ``loader(kind)``, when given, fills one kind on its first lookup: asking for an adapter does
    not import every architecture (and torch with them), so commands check their input fast.
    """

    def __init__(self, loader: Callable[[str], None] | None = None) -> None:
        self._items: dict[str, dict[str, Component]] = {k: {} for k in KINDS}
        self._loader = loader
        self._loaded: set[str] = set() if loader is not None else set(KINDS)

    def _table(self, kind: str) -> dict[str, Component]:
        if kind not in self._loaded and kind in self._items:
            self._loaded.add(kind)
            assert self._loader is not None
            try:
                self._loader(kind)
            except BaseException:
                self._loaded.discard(kind)
                self._items[kind].clear()
                raise
        return self._items[kind]

    def add(self, component: Component) -> None:
        if component.kind not in self._items:
            raise PluginError(f"plugin {component.plugin!r}: unknown component kind {component.kind!r}")
        table = self._items[component.kind]  # filled by the loader (or directly, without one)
        if component.key in table:
            other = table[component.key]
            raise PluginError(
                f"{component.kind} {component.key!r} is registered twice: by plugin {other.plugin!r} "
                f"and by plugin {component.plugin!r}; uninstall one of them or restrict loading with "
                "SAE_LOAD_PLUGINS"
            )
        table[component.key] = component

    def all(self, kind: str) -> list[Component]:
        return sorted(self._table(kind).values(), key=lambda c: c.key)

    def names(self, kind: str, *, modality: str | None = None) -> list[str]:
        return [
            c.name
            for c in self.all(kind)
            if modality is None or c.attrs.get("modality") in (None, modality)
        ]

    def get(self, kind: str, name: str, *, modality: str | None = None) -> Component:
        """The component ``name`` of ``kind``; for datasets, ``modality`` picks the variant."""
        table = self._table(kind)
        if kind == "dataset" and modality is not None and f"{modality}/{name}" in table:
            return table[f"{modality}/{name}"]
        if name in table:
            return table[name]
        candidates = [c for c in table.values() if c.name == name]
        if len(candidates) == 1 and modality is None:
            return candidates[0]
        installed = self.names(kind, modality=modality)
        label = LABELS.get(kind, kind)
        what = f"{modality} {label}" if modality else label
        hint = ", ".join(installed) if installed else "none (install a plugin that provides one)"
        raise UnknownComponentError(f"unknown {what} {name!r}; installed: {hint}")
