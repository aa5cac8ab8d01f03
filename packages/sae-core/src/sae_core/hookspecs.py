"""Hook specifications of the ``sae`` plugin system (pluggy project name ``"sae"``).

A plugin is a module (or object) with functions decorated by :data:`hookimpl`. Built-in
components are registered through exactly these hooks, so a third-party plugin published under the
entry-point group ``sae`` is a first-class citizen.

Catalogue hooks receive a ``register`` callback instead of returning values: this lets
:mod:`sae_core.plugins` attribute every component to the plugin that registered it, which is how a
duplicate name is reported with both plugins named.

``register(name, factory, *, description="", **attrs)``: ``factory`` is a class or callable that
builds the component on demand. Keep the plugin module itself cheap to import; import heavy
libraries (open_clip, transformer_lens, streamlit, ...) inside the factory so that ``sae --help``
and ``sae plugins`` stay fast and keep working when an optional dependency is broken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import typer

PROJECT = "sae"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The callback handed to catalogue hooks."""

    def __call__(self, name: str, factory: Callable[..., Any], *, description: str = "", **attrs: Any) -> None: ...


class SAEHookSpecs:
    """Every hook a plugin may implement. Each is called once, when the registry is first built."""

    @hookspec
    def register_adapters(self, register: Register) -> None:
        """Register model adapters (``sae cache --adapter NAME``).

        ``factory(request: AdapterRequest) -> ModelAdapter``; usually the adapter class itself.
        Pass ``modality="image"`` or ``"text"`` so ``--data`` specs resolve to datasets of the
        matching modality.
        """

    @hookspec
    def register_stores(self, register: Register) -> None:
        """Register activation stores.

        ``factory() -> ActivationStore`` (see :mod:`sae_core.protocols.store`). The store named
        ``local`` is the default; others are chosen by ``--store NAME`` or detected from a path.
        """

    @hookspec
    def register_architectures(self, register: Register) -> None:
        """Register SAE architectures (``sae train --arch NAME``).

        ``factory`` is an :class:`~sae_core.protocols.architecture.Architecture` subclass (with its
        ``Hyper`` dataclass and ``Bank`` subclass). The name is written into every checkpoint's
        ``cfg.json``, so it must never change.
        """

    @hookspec
    def register_analyses(self, register: Register) -> None:
        """Register analyses (``sae analyze --only NAME``).

        ``factory`` is an :class:`~sae_core.protocols.analysis.Analysis` subclass; it reads a
        checkpoint and a cache and writes its results beside the checkpoint.
        """

    @hookspec
    def register_datasets(self, register: Register) -> None:
        """Register datasets, selected on the CLI by ``--data NAME:ARG``.

        ``factory(arg: str | None, **options) -> Dataset``. Pass ``modality="image"`` or
        ``"text"``: names are unique per modality (``hf`` exists for both images and text).
        """

    @hookspec
    def register_exporters(self, register: Register) -> None:
        """Register export formats (``sae export --format NAME``).

        ``factory() -> Exporter`` (see :mod:`sae_core.protocols.exporter`); usually the class.
        ``saelens`` is built in; an architecture that maps onto a SAELens architecture says so
        on its class (``Architecture.saelens_architecture`` or ``saelens_export``) instead.
        """

    @hookspec
    def register_commands(self, app: typer.Typer) -> None:
        """Add sub-commands to the ``sae`` CLI (a :class:`typer.Typer`).

        Called while the CLI is assembled, before argument parsing; keep command modules free of
        heavy imports at module level.
        """
