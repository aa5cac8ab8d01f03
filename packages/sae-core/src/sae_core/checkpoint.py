"""SAE checkpoints: one directory per SAE with ``cfg.json`` and ``sae.safetensors``.

Loading is tolerant of extra/older fields (hyperparameters are read leniently) and strict about
what matters: a missing file, an unknown architecture or mismatched tensor shapes are clear errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sae_core.errors import CheckpointError, SAEError
from sae_core.io import atomic_path, atomic_write_json

CFG = "cfg.json"
WEIGHTS = "sae.safetensors"
FORMAT_VERSION = 1


def save_sae(path: str | Path, tensors: dict[str, torch.Tensor], cfg: dict[str, Any]) -> Path:
    """Write a checkpoint directory durably (weights first, cfg.json last: cfg.json marks it complete)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / WEIGHTS) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "sae"})
    cfg = {"format": "sae", "format_version": FORMAT_VERSION, **cfg}
    atomic_write_json(path / CFG, cfg)
    return path


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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    problem = safetensors_problem(path)
    if problem is None:
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            problem = f"{path.name} is damaged ({' '.join(str(e).split())})"
    raise CheckpointError(f"checkpoint {path.parent}: {problem}; train or download that SAE again")


class SAE(nn.Module):
    """One trained SAE for inference: a bank of size 1 with a batch-shaped interface."""

    def __init__(self, bank: nn.Module, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.bank = bank
        self.cfg = cfg
        self.d_in = int(cfg["d_in"])
        self.d_sae = int(cfg["d_sae"])
        self.architecture = str(cfg["architecture"])

    def _flat(self, x: torch.Tensor, d: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.shape[-1] != d:
            raise SAEError(
                f"SAE {self.cfg.get('name', '')!r} expects inputs of size {d}, got {x.shape[-1]}; "
                "it was trained on another layer or model"
            )
        return x.reshape(-1, d), x.shape[:-1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d_in) -> latents (..., d_sae)."""
        flat, lead = self._flat(x, self.d_in)
        return self.bank.encode(flat.to(self.W_enc.dtype))[0].reshape(*lead, self.d_sae)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """latents (..., d_sae) -> reconstruction (..., d_in)."""
        flat, lead = self._flat(f, self.d_sae)
        return self.bank.decode(flat.unsqueeze(0))[0].reshape(*lead, self.d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def W_enc(self) -> torch.Tensor:
        return self.bank.W_enc[0]

    @property
    def W_dec(self) -> torch.Tensor:
        return self.bank.W_dec[0]

    @property
    def b_enc(self) -> torch.Tensor:
        return self.bank.b_enc[0]

    @property
    def b_dec(self) -> torch.Tensor:
        return self.bank.b_dec[0]


def build_sae(cfg: dict[str, Any], tensors: dict[str, torch.Tensor], device: str | torch.device = "cpu") -> SAE:
    """An :class:`SAE` from a cfg dict and checkpoint-layout tensors."""
    from sae_core.config import from_dict
    from sae_core.plugins import get_component

    arch = get_component("architecture", str(cfg["architecture"])).factory
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    hyper = from_dict(arch.Hyper, cfg.get("hyper", {}), strict=False, where="cfg.json hyper")
    if hasattr(hyper, "validate"):
        hyper.validate(d_sae)
    bank = arch.build_bank(d_in, d_sae, [hyper])
    for name, shape in (("W_enc", (d_in, d_sae)), ("W_dec", (d_sae, d_in)), ("b_enc", (d_sae,)), ("b_dec", (d_in,))):
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise CheckpointError(
                f"tensor {name} has shape {tuple(tensors[name].shape)}, but cfg.json says {shape} (d_in={d_in}, d_sae={d_sae})"
            )
    bank.load_single(0, {k: v.float() for k, v in tensors.items()})
    bank.eval()
    return SAE(bank, cfg).to(device)


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SAE:
    """Load a checkpoint directory (ours, or SAELens's ``cfg.json`` + ``sae_weights.safetensors``)."""
    path = Path(path)
    if not (path / CFG).is_file():
        raise CheckpointError(f"{path} is not an SAE checkpoint (no {CFG}); pass a directory made by `sae train`")
    try:
        cfg = json.loads((path / CFG).read_text())
    except ValueError as e:
        raise CheckpointError(f"{path / CFG} is corrupt ({e}); train or download that SAE again") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path / CFG} is not a checkpoint config (not a JSON object); train or download that SAE again")
    if not (path / WEIGHTS).is_file() and (path / "sae_weights.safetensors").is_file():
        try:
            from sae_core.interop.saelens import load_saelens
        except ImportError:
            raise CheckpointError(f"{path} is a SAELens checkpoint; SAELens import is not available") from None
        return load_saelens(path, device=device)
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} has {CFG} but no {WEIGHTS}; the checkpoint is incomplete, re-export it")
    for key in ("architecture", "d_in", "d_sae"):
        if key not in cfg:
            raise CheckpointError(f"{path / CFG} lacks {key!r}; it is not an sae checkpoint")
    return build_sae(cfg, load_weights(path / WEIGHTS), device)


def find_checkpoints(path: str | Path) -> list[Path]:
    """The checkpoint directories in ``path``: itself, or the SAEs of a run directory."""
    path = Path(path)
    if (path / CFG).is_file():
        return [path]
    if (path / "sweep.json").is_file():
        try:
            doc = json.loads((path / "sweep.json").read_text())
            found = [path / s["path"] for s in doc.get("saes", []) if (path / s["path"] / CFG).is_file()]
        except (ValueError, KeyError, TypeError, AttributeError):
            found = []  # a damaged sweep.json: fall back to the directories themselves
        if found:
            return found
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if (p / CFG).is_file())
        if found:
            return found
    raise CheckpointError(f"no SAE checkpoints in {path}; pass a run directory from `sae train` or one SAE's directory")
