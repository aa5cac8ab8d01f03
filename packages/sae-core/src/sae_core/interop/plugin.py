"""Registers the built-in export formats (``sae export --format NAME``)."""

from __future__ import annotations

from typing import Any

from sae_core.hookspecs import hookimpl


@hookimpl
def register_exporters(register: Any) -> None:
    from sae_core.interop.saelens import SAELensExporter

    register(SAELensExporter.name, SAELensExporter, description=(SAELensExporter.__doc__ or "").strip())
