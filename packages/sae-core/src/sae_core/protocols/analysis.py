"""Analyses: read a checkpoint and a cache, write results beside the checkpoint."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sae_core.protocols.store import ActivationReader


@dataclass
class AnalysisContext:
    """Everything an analysis needs; built once by ``sae analyze`` per checkpoint."""

    checkpoint: Path  # the SAE's directory: results are written here
    sae: Any  # the loaded SAE module
    reader: ActivationReader
    device: str = "cpu"
    batch_size: int = 4096
    max_examples: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


class Analysis(ABC):
    """One analysis; ``requires`` names analyses whose outputs it reads; ``options`` names the
    ``sae analyze --option KEY=VALUE`` keys it reads from ``ctx.options`` (values arrive as
    strings; keys no installed analysis declares are rejected)."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        """Compute, write result files into ``ctx.checkpoint``, return a JSON-able summary."""
