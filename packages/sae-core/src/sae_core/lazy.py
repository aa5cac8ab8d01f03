"""One lazy loader for the packages whose public names load on first use (PEP 562).

``sae_core``, ``sae_core.protocols``, ``sae_core.checkpoint``, ``sae_core.train`` and
``sae_core.inference`` each keep one table of their public names, ``_WHERE``: name -> where it is
defined. ``__all__``, ``__getattr__`` and ``__dir__`` are derived from it here, so that importing
a package (``sae --help``, ``sae info``, the viewer) costs only its table and a name costs its
module's import the first time it is used. A value is ``"module"`` (the attribute of that name in
the module), ``"module:attr"`` (another attribute) or ``"module:"`` (the module itself); a module
is absolute (``"sae_core.io"``) or relative to the package (``"adapter"``). Imports only
:mod:`importlib`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, where: dict[str, str], namespace: dict[str, Any]) -> tuple[
        list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__`` (sorted), ``__getattr__`` and ``__dir__`` of ``package`` (its ``__name__``),
    whose public names are ``where``; ``namespace`` (its ``globals()``) caches each loaded name so
    that later lookups never reach ``__getattr__``."""
    names = sorted(where)

    def __getattr__(name: str) -> Any:
        spec = where.get(name)
        if spec is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, colon, attr = spec.partition(":")
        imported = importlib.import_module(module if module.startswith("sae_core") else f"{package}.{module}")
        value = imported if colon and not attr else getattr(imported, attr or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return list(namespace.get("__all__", names))

    return names, __getattr__, __dir__
