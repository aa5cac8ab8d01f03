"""The one rule for what an SAE code means: a latent *fires* where its code is non-zero.

Architectures may produce signed codes (``Architecture.non_negative_codes = False``), so no
consumer may test ``code > 0``: a latent at −2.3 fires as surely as one at +2.3. Every consumer
(training metrics, analyses, reconstruction, viewer, exporters) counts firing with
:func:`firing` and ranks or scales activations by :func:`magnitude`; for non-negative codes both
are what they always were. Works on torch tensors and numpy arrays alike, and imports neither.
"""

from __future__ import annotations

from typing import Any


def firing(codes: Any) -> Any:
    """Boolean mask of the latents that fire: ``codes != 0`` (same shape as ``codes``)."""
    return codes != 0


def magnitude(codes: Any) -> Any:
    """How strongly each latent fires, whatever its sign: ``|codes|``."""
    return abs(codes)
