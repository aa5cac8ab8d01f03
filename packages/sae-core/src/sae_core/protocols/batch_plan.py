"""What one epoch of batches is: the :class:`BatchPlan` that every reader's ``batches`` takes, and
the :class:`Mixing` (the order of an epoch) it names.

One frozen value instead of a dozen keyword arguments repeated by every reader: the trainer, the
validation sample, the checks and the benchmarks build a plan, and every reader (the protocol's
defaults, the local store, the live source) reads the same fields with the same meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sae_core.errors import ConfigError, StoreError

if TYPE_CHECKING:
    import torch

    from sae_core.validation_split import Selection

#: the ``tokens`` filters of a plan (``all``, or one token kind of ``CacheMetadata.token_kinds``)
TOKEN_FILTERS = ("all", "cls", "patch", "register", "token")
MIXINGS = ("shuffle", "buffer")


@dataclass(frozen=True)
class Mixing:
    """How one epoch's samples are ordered into batches.

    ``shuffle`` (the default): the store's own plan, a seeded shuffle of the whole cache (the
    local store: shuffled chunks in windows of about 256 MiB). ``buffer``: the plan a live source
    (a model running beside the trainer, :mod:`sae_core.train.live`) can follow, so that a live run
    and a run on the cache it wrote see the same batches: the dataset's examples are cut into
    consecutive *windows* of ``window_examples`` examples (window ``w`` holds the rows of
    examples ``[w * E, (w + 1) * E)``, in dataset order); each window's selected samples, after
    the previous window's remainder, are permuted by ``default_rng([seed, epoch, w])`` and cut
    into batches, and what does not fill a batch is carried into the next window (dropped at the
    end of the epoch). Windows without samples are skipped. See
    :class:`sae_core.stores.batching.BufferMixer`.
    """

    kind: str = "shuffle"  # "shuffle" | "buffer"
    window_examples: int = 0  # buffer: examples per window

    def __post_init__(self) -> None:

        if self.kind not in MIXINGS:
            raise ConfigError(f"mixing must be one of {', '.join(MIXINGS)}, got {self.kind!r}")
        if self.kind == "buffer" and self.window_examples < 1:
            raise ConfigError(f"buffer mixing needs window_examples >= 1, got {self.window_examples}")

    @property
    def buffered(self) -> bool:
        return self.kind == "buffer"


@dataclass(frozen=True)
class BatchPlan:
    """One epoch of batches: which samples, in which order, from which batch on, delivered how.

    Deterministic given ``(seed, epoch)``: every selected valid token appears exactly once per
    epoch (``drop_last``: but for the last partial batch), and row ``i`` of a batch is sample
    ``reader.batch_sample_ids(plan, batch)[i]`` (a batch's samples in sorted id order). Checked
    on construction (:meth:`validate`): bad values raise a one-line ``StoreError``.
    """

    #: samples per batch (all ranks together: ``part`` splits each batch)
    batch_size: int
    #: layers to read, as indices into the cache's layers (negative allowed) or names; each batch
    #: is ``(batch, len(layers), d_model)`` (None: every layer of the cache)
    layers: Sequence[int | str] | None = None
    #: token filter: ``all`` | ``cls`` | ``patch`` | ``register`` | ``token``; tokens whose index
    #: record is not ``valid`` (padding, BOS) are never read
    tokens: str = "all"
    #: seed of the epoch's order (with ``epoch``)
    seed: int = 0
    #: the epoch: each epoch of one seed is a different order of the same samples
    epoch: int = 0
    #: False: samples in cache order (no permutation), e.g. for sequential reads
    shuffle: bool = True
    #: drop the last batch of the epoch when it is not full (False: yield it, shorter)
    drop_last: bool = True
    #: skip that many batches of the epoch (exact resume of training)
    start_batch: int = 0
    #: ``(rank, world)``: only rank's share of every batch, such that the shares of all ranks,
    #: concatenated in rank order, are the batch one reader yields (data-parallel training)
    part: tuple[int, int] = (0, 1)
    #: one side of a validation split (whole examples, :mod:`sae_core.validation_split`):
    #: training reads ``train``, evaluation ``val`` (None: every example)
    select: Selection | None = None
    #: the order of the epoch (:class:`Mixing`; None: the store's own shuffle)
    mixing: Mixing | None = None
    #: where the batches go (CUDA: pinned memory and non-blocking copies where the store can)
    device: str | torch.device = "cpu"
    #: dtype of the batches (None: float32 for the local store and live source, else the reader's)
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """One-line ``StoreError`` for a value no reader can honour."""

        if self.batch_size < 1:
            raise StoreError(f"batch size must be >= 1, got {self.batch_size}")
        if self.tokens not in TOKEN_FILTERS:
            raise StoreError(f"unknown token filter {self.tokens!r}; use one of {', '.join(TOKEN_FILTERS)}")
        if self.start_batch < 0:
            raise StoreError(f"start_batch must be >= 0, got {self.start_batch}")
        rank, world = self.part
        if not 0 <= rank < world:
            raise StoreError(f"part {self.part} is not (rank, world) with 0 <= rank < world")
        if world > 1 and self.batch_size % world:
            raise StoreError(f"batch size {self.batch_size} does not split evenly over {world} ranks; "
                             f"use a multiple of {world}")

    @property
    def buffered(self) -> bool:
        """Whether the epoch follows the ``buffer`` plan of :class:`Mixing`."""
        return self.mixing is not None and self.mixing.buffered
