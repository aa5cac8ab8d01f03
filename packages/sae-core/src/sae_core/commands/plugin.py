"""Registers the built-in commands through the ``register_commands`` hook.

Each module in :data:`COMMAND_MODULES` exposes ``register(app)``; modules are imported here, at
CLI assembly time, and must keep heavy imports inside their command functions.
"""

from __future__ import annotations

import importlib
from typing import Any

from sae_core.hookspecs import hookimpl

COMMAND_MODULES: tuple[str, ...] = (
    "sae_core.commands.plugins_cmd",
    "sae_core.commands.info_cmd",
    "sae_core.commands.cache_cmd",
    "sae_core.commands.hooks_cmd",
    "sae_core.commands.train_cmd",
    "sae_core.commands.analyze_cmd",
    "sae_core.commands.export_cmd",
    "sae_core.commands.import_cmd",
    "sae_core.commands.hub_cmd",
    "sae_core.commands.features_cmd",
    "sae_core.commands.steer_cmd",
    "sae_core.commands.ablate_cmd",
    "sae_core.commands.probe_cmd",
    "sae_core.commands.query_cmd",
)


@hookimpl
def register_commands(app: Any) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
