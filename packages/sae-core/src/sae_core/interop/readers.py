"""One entry point for reading an SAE checkpoint in any format we know: ours or a peer's.

:func:`read_any` recognises the format by content (:func:`sae_core.interop.detect.checkpoint_format`)
and returns our config and checkpoint-layout tensors (``W_enc`` (d_in, d_sae), ``W_dec``
(d_sae, d_out), ...); :func:`sae_core.checkpoint.load_sae` builds the SAE from them and
:func:`sae_core.interop.importer.import_checkpoints` writes them as ours.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from sae_core.checkpoint.cfg import SAECheckpointConfig, read_cfg
from sae_core.checkpoint.filenames import WEIGHTS_FILE
from sae_core.checkpoint.weights import load_weights
from sae_core.interop.detect import checkpoint_format
from sae_core.interop.dictionary_learning import read_dictionary_learning
from sae_core.interop.saelens import read_saelens
from sae_core.interop.saev import read_saev
from sae_core.interop.sparsify import read_sparsify

Reader = Callable[[Path], tuple[SAECheckpointConfig, dict[str, torch.Tensor]]]


def _reader(fmt: str) -> Reader:
    if fmt == "saelens":

        return read_saelens
    if fmt == "sparsify":

        return read_sparsify
    if fmt == "dictionary_learning":

        return read_dictionary_learning
    if fmt == "saev":

        return read_saev

    return lambda p: (read_cfg(p), load_weights(p / WEIGHTS_FILE))


def read_any(path: str | Path) -> tuple[str, SAECheckpointConfig, dict[str, torch.Tensor]]:
    """The format, our config and our tensors of the checkpoint at ``path`` (any format we read)."""
    path = Path(path)
    fmt = checkpoint_format(path)
    cfg, tensors = _reader(fmt)(path)
    return fmt, cfg, tensors
