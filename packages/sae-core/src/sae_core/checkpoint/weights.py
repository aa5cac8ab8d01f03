"""Safetensors files of checkpoints: durable writes and reads whose damage is one line.

Kept apart from :mod:`sae_core.checkpoint` so that everything reading or writing weights (the
loader, the SAELens interop, exporters, ``sae info``) shares one implementation without
importing each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from sae_core.errors import CheckpointError
from sae_core.io import atomic_path

if TYPE_CHECKING:
    import torch


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to the safetensors file ``path`` durably (temporary name, fsync, rename)."""
    from safetensors.torch import save_file  # lazy: loads safetensors

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def safetensors_problem(path: str | Path) -> str | None:
    """Why the safetensors file ``path`` is unusable (missing, truncated, bad header), or None.

    Reads only the header and the file size, so ``sae info`` can check a checkpoint for free.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"{path.name} is truncated (its header needs {n} bytes, the file has {size})"
            header = json.loads(f.read(n))
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (ValueError, UnicodeDecodeError):
        return f"{path.name} has a damaged header"
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and "data_offsets" in v]
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"{path.name} is truncated ({size} bytes, needs {need})"
    return None


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; damage is a one-line CheckpointError naming the file."""
    from safetensors import SafetensorError  # lazy: loads safetensors
    from safetensors.torch import load_file  # lazy: loads safetensors

    path = Path(path)
    problem = safetensors_problem(path)
    if problem is None:
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            problem = f"{path.name} is damaged ({' '.join(str(e).split())})"
    raise CheckpointError(f"checkpoint {path.parent}: {problem}; train or download that SAE again")
