"""Export formats: ``sae export --format NAME`` writes SAE checkpoints for another library.

``sae export`` of a run first calls :meth:`Exporter.check` on every SAE, then
:meth:`Exporter.write` for each into a staging directory that is renamed to ``--out`` only when
all succeeded, so a run with one SAE the format cannot hold writes nothing at all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from sae_core.checkpoint.cfg import SAECheckpointConfig


class Exporter(ABC):
    """One export format; registered with ``register_exporters`` and built without arguments."""

    name: ClassVar[str]

    def check(self, checkpoint: Path, cfg: SAECheckpointConfig) -> None:  # noqa: B027 (optional)
        """Raise :class:`~sae_core.errors.ExportError` (or another ``SAEError``) naming the
        problem if ``checkpoint`` cannot be exported in this format. Called for every SAE before
        anything is written; keep it cheap (memory of one SAE at most). Default: accept."""

    @abstractmethod
    def write(self, checkpoint: Path, cfg: SAECheckpointConfig, out: Path) -> None:
        """Write the export of ``checkpoint`` into the new, empty directory ``out`` (write files
        with :mod:`sae_core.io`'s durable helpers)."""
