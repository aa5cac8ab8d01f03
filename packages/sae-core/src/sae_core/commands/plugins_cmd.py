"""``sae plugins``: which plugins are loaded and what each registered, as JSON."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def plugins(
    all_: Annotated[bool, typer.Option("--all", help="Include the built-in plugins of sae-core.")] = False,
) -> None:
    """List installed plugins, their versions, hooks and registered components (JSON)."""
    from sae_core.plugins import get_manager  # lazy: loads pluggy

    manager = get_manager()
    out: dict[str, Any] = {"plugins": []}
    for info in manager.infos.values():
        if info.builtin and not all_:
            continue
        out["plugins"].append(
            {
                "name": info.name,
                "module": info.module,
                "version": info.version,
                "builtin": info.builtin,
                "hooks": info.hooks,
                "components": manager.components(info.name),
            }
        )
    out["failed"] = manager.failures
    typer.echo(json.dumps(out, indent=2))


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
