"""In which dtype batches leave the store for the training device.

A half-precision cache (``float16`` / ``bfloat16``) holds half the bytes of an fp32 one; that
saving should last until the batch is on the device. So for a CUDA device the trainer asks the
reader for batches in the stored dtype (the host gathers the batch's rows and pins them, no fp32
copy) and converts each batch to fp32 on the device. On CPU the host is the device: the reader
converts each batch in its I/O threads, overlapped with the training step. The conversion
half → fp32 is exact, so both give the same fp32 batch bit for bit.
"""

from __future__ import annotations

import torch

HALF_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def transfer_dtype(stored: str, device: torch.device) -> torch.dtype | None:
    """The dtype to request from ``reader.batches(dtype=)`` for a cache stored as ``stored``:
    the stored half dtype for a CUDA device, None (the reader's fp32) otherwise."""
    return HALF_DTYPES.get(stored) if device.type == "cuda" else None
