"""Registers the built-in SAE architectures."""

from __future__ import annotations

from typing import Any

from sae_core.hookspecs import hookimpl


@hookimpl
def register_architectures(register: Any) -> None:
    """Filled by the trainer issue."""
