"""Help texts that list what is installed (``--arch``: every registered architecture).

Option help strings may hold ``{architecture}``, ``{adapter}``, ``{store}``, ``{analysis}`` or
``{exporter}``; a command built with :class:`RegistryHelpCommand` replaces them with the names
in the plugin registry when (and only when) its help is shown. So third-party components appear
in ``sae train --help`` like the built-ins, while ``sae --help`` and every normal invocation stay
free of the registry (building it imports the architectures, and with them torch).
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

from sae_core.registry import KINDS


def fill(text: str | None) -> str | None:
    """``text`` with every ``{kind}`` placeholder replaced by the installed names of that kind."""
    if not text or "{" not in text:
        return text
    from sae_core.plugins import get_registry  # lazy: loads pluggy

    for kind in KINDS:
        token = "{" + kind + "}"
        if token in text:
            names = sorted(set(get_registry().names(kind)))
            text = text.replace(token, ", ".join(names) or "none installed")
    return text


class RegistryHelpCommand(TyperCommand):
    """A Typer command whose help lists installed components (see the module docstring)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.help = fill(self.help)
        for param in self.params:
            if getattr(param, "help", None):
                param.help = fill(param.help)
        super().format_help(ctx, formatter)
