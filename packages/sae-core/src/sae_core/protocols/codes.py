"""What the shared analysis pass hands to pass analyses: each chunk's codes (:class:`CodeChunk`)
and the consumer that receives them (:class:`CodeConsumer`).

A module of its own because both sides use it: the protocol (:class:`~sae_core.protocols.analysis.PassAnalysis`
returns a consumer) and the engine (:mod:`sae_core.analyses.shared_pass` builds the chunks), and
the protocol's default ``PassAnalysis.run`` runs the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass
class CodeChunk:
    """One chunk of the shared analysis pass (:mod:`sae_core.analyses.shared_pass`) for one SAE:
    the cache rows read, the SAE's codes of them, dense and as sparse triplets.

    Token numbers (``token``) count the tokens the SAE reads (the ``keep`` ones) over the whole
    pass, in row-major order: the first chunk's selected tokens are ``0 .. n_tokens - 1``, the
    next chunk's start at ``first_token`` = the tokens before it. The feature activation
    database (:func:`sae_core.open_activation_db`) uses the same numbers. Triplets are ordered by
    token, then latent. Consumers that can work from the triplets should: they hold only the
    firings (nnz ≈ L0 · n_tokens), the dense codes hold every latent of every token.
    """

    rows: np.ndarray  # (n,) cache row numbers, ascending
    index: np.ndarray  # (n, T) index records (INDEX_DTYPE: example, position, token, valid)
    keep: torch.Tensor  # (n, T) bool: the tokens the SAE reads (valid, of its token kind)
    codes: torch.Tensor  # (n, T, d_sae) codes, zero where not ``keep`` (signed for signed architectures)
    token: torch.Tensor  # (nnz,) int64 global token number of each firing
    latent: torch.Tensor  # (nnz,) int64 latent of each firing
    value: torch.Tensor  # (nnz,) float32 signed code of each firing (non-zero)
    row: torch.Tensor  # (nnz,) int64 index of each firing's row in this chunk (into ``rows``)
    slot: torch.Tensor  # (nnz,) int64 its column in the row (0 .. T-1)
    n_tokens: int  # tokens of this chunk the SAE reads (= keep.sum())
    first_token: int  # global number of this chunk's first selected token


@runtime_checkable
class CodeConsumer(Protocol):
    """What the shared pass feeds: ``update`` once per chunk (in row order), ``finish`` once at
    the end (write files, return a JSON-able summary). Accumulators of sparse firings with an
    ``update(token, latent, n_tokens)`` / ``result()`` API plug in through
    :func:`sae_core.analyses.shared_pass.sparse_consumer`."""

    def update(self, chunk: CodeChunk) -> None: ...

    def finish(self) -> Any: ...
