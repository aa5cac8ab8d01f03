"""The sae-viewer plugin (entry point ``viewer``): adds ``sae view`` and ``sae report``."""

from __future__ import annotations

from typing import Any

from sae_core import hookimpl


@hookimpl
def register_commands(app: Any) -> None:
    from sae_viewer.launch import view
    from sae_viewer.report_cmd import report

    app.command("view")(view)
    app.command("report")(report)
