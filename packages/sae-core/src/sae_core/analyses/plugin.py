"""Registers the built-in analyses."""

from __future__ import annotations

from typing import Any

from sae_core.hookspecs import hookimpl


@hookimpl
def register_analyses(register: Any) -> None:
    """Filled by the analyses issue."""
