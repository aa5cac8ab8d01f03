"""Checks of command-line options that commands run *before* any slow work.

A wrong device or an unwritable ``--out`` should fail in a second with a one-line message, not
after a model has loaded for half a minute or a sweep has trained for an hour. Each check raises
:class:`~sae_core.errors.ConfigError` naming the option and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from sae_core.errors import ConfigError

DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(device: str, flag: str = "--device") -> str:
    """``device`` if torch can use it here: ``cpu``, ``cuda``, ``cuda:N`` (N < GPUs), ``mps``."""
    if device == "cpu":
        return device  # no torch import: commands validate their options before loading anything
    import torch  # lazy: loads torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{flag} {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type not in DEVICE_TYPES:
        raise ConfigError(f"{flag} {device!r}: device type {parsed.type!r} is not supported; use cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{flag} {device}: no CUDA GPU is available here (torch.cuda.is_available() is "
                              "False); use --device cpu, or install a CUDA build of torch")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{flag} {device}: Apple MPS is not available here; use --device cpu")
    return device


def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` can be a directory we write into: not a file, and it (or the ancestor that
    would hold it) is writable. Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a directory; pass a directory path")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, so no directory can be made below it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable (read-only or no permission); "
                          "pass a writable directory")
    return path


def check_input_file(path: str | Path, flag: str) -> Path:
    """``path`` is an existing regular file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{flag} {path} does not exist; check the path")
    if not path.is_file():
        raise ConfigError(f"{flag} {path} is a directory, not a file; pass the file itself")
    return path


def check_positive(value: int | None, flag: str, *, minimum: int = 1) -> None:
    """``value`` is None (not given) or at least ``minimum``."""
    if value is not None and value < minimum:
        raise ConfigError(f"{flag} must be >= {minimum}, got {value}")
