"""Analyses: read a checkpoint and a cache, write results beside the checkpoint.

An analysis gets an :class:`AnalysisContext` per checkpoint. Its methods are the ones the
built-in analyses use — the SAE's own layer and token kind, its inputs streamed from the cache
in row order, its codes, and durable result files — so a plugin analysis reads the data exactly
as they do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sae_core.protocols.codes import CodeChunk, CodeConsumer

if TYPE_CHECKING:
    import numpy as np
    import torch

    from sae_core.checkpoint.sae import SAE
    from sae_core.protocols.store import ActivationReader

__all__ = ["Analysis", "AnalysisContext", "CodeChunk", "CodeConsumer", "PassAnalysis"]  # CodeChunk, CodeConsumer: from .codes


@dataclass
class AnalysisContext:
    """Everything an analysis needs; built once by ``sae analyze`` per checkpoint."""

    checkpoint: Path  # the SAE's directory: results are written here
    sae: SAE  # the loaded SAE (``sae.cfg``: its cfg.json; ``sae.non_negative_codes``)
    reader: ActivationReader  # the cache it was trained on
    device: str = "cpu"
    batch_size: int = 4096  # tokens per encode batch
    max_examples: int | None = None  # analyse at most this many cache rows
    options: dict[str, Any] = field(default_factory=dict)  # --option KEY=VALUE (strings)

    def layer_and_positions(self) -> tuple[int, np.ndarray]:
        """The cache layer the SAE was trained on and the token positions of its token kind."""
        from sae_core.analyses.common import layer_and_positions  # lazy: loads torch, numpy

        return layer_and_positions(self)

    def rows(self, *, metrics: bool = False) -> np.ndarray:
        """The cache rows to analyse (ascending), as ``--option split=`` chooses.

        Descriptive analyses (``metrics=False``: statistics, examples) read every row by default
        (``split=all``), the first ones up to ``--option max_tokens=`` (2,000,000) tokens the SAE
        reads, so that rare latents are seen. Metrics (``metrics=True``) read held-out rows: the
        SAE's validation examples (whole examples its training never read), or the last 10% of
        the rows for SAEs trained without a validation split. At most ``max_examples`` rows."""
        from sae_core.analyses.common import analysis_rows, descriptive_rows  # lazy: loads torch, numpy

        return analysis_rows(self, legacy="tail") if metrics else descriptive_rows(self)

    def iter_rows(self, rows: np.ndarray | None = None, rows_per_chunk: int | None = None
                  ) -> Iterator[tuple[np.ndarray, torch.Tensor, np.ndarray]]:
        """(row numbers (n,), acts (n, T, d_in) of the SAE's layer on ``device``, index records
        (n, T)) for ``rows`` (default :meth:`rows`) in order; default chunks hold about
        ``batch_size`` tokens."""
        from sae_core.analyses.common import iter_rows  # lazy: loads torch, numpy
        from sae_core.analyses.common import rows_per_chunk as default_rows  # lazy: loads torch, numpy

        return iter_rows(self, self.rows() if rows is None else rows, rows_per_chunk or default_rows(self))

    def selected_mask(self, index: np.ndarray) -> torch.Tensor:
        """(n, T) bool: the tokens the SAE is meant for (valid, and of its token kind)."""
        from sae_core.analyses.common import selected_mask  # lazy: loads torch, numpy

        return selected_mask(self, index)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (..., d_sae) of inputs (..., d_in), without gradients. A latent fires where its
        code is non-zero (``sae_core.firing_rule.firing``); codes are signed when
        ``self.sae.non_negative_codes`` is False."""
        import torch  # lazy: loads torch

        with torch.no_grad():
            return self.sae.encode(x)

    def option(self, name: str, default: Any, cast: Callable[[Any], Any], check: str = "") -> Any:
        """``--option name=VALUE`` cast with ``cast`` (declare ``name`` in ``Analysis.options``);
        a bad value is a one-line error. ``check``: ``"positive"`` or ``"fraction"``."""
        from sae_core.analyses.common import option  # lazy: loads torch, numpy

        return option(self, name, default, cast, check)

    def write_json(self, filename: str, doc: Any) -> Path:
        """Durably write ``doc`` as JSON into the checkpoint directory; returns the path."""
        from sae_core.analyses.common import save_json  # lazy: loads torch, numpy

        save_json(self.checkpoint / filename, doc)
        return self.checkpoint / filename

    def write_tensors(self, filename: str, tensors: dict[str, torch.Tensor]) -> Path:
        """Durably write ``tensors`` as safetensors into the checkpoint directory."""
        from sae_core.analyses.common import save_safetensors  # lazy: loads torch, numpy

        save_safetensors(self.checkpoint / filename, tensors)
        return self.checkpoint / filename


class Analysis(ABC):
    """One analysis; ``requires`` names analyses whose outputs it reads; ``options`` names the
    ``sae analyze --option KEY=VALUE`` keys it reads from ``ctx.options`` (values arrive as
    strings; keys no installed analysis declares are rejected). Register with ``default=False``
    to run only when asked for (``sae analyze --only NAME``). One instance analyses every
    checkpoint of a run, so it may keep caches (a model) across calls."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        """Compute, write result files into ``ctx.checkpoint``, return a JSON-able summary."""


class PassAnalysis(Analysis):
    """An analysis that reads the SAE's codes from the shared pass instead of reading the cache
    itself: ``sae analyze`` reads each chunk of a cache once for every SAE and every pass
    analysis on it, encodes it once per SAE, and hands the codes to each analysis's consumer.
    Implement :meth:`consumer`; :meth:`run` (one SAE, one analysis) still works on its own."""

    @abstractmethod
    def consumer(self, ctx: AnalysisContext) -> CodeConsumer:
        """A fresh consumer for one SAE (its ``finish()`` returns this analysis's summary)."""

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        from sae_core.analyses.shared_pass import run_shared_pass  # lazy: loads torch, numpy

        return run_shared_pass([(ctx, [self])])[ctx.checkpoint][self.name]
