"""One trained SAE for inference: a bank of size 1 behind a batch-shaped interface.

Built from a :class:`~sae_core.checkpoint.cfg.SAECheckpointConfig` and checkpoint-layout tensors by
:func:`build_sae`; :func:`sae_core.checkpoint.load_sae` and the SAELens import both end here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sae_core.checkpoint.cfg import SAECheckpointConfig
from sae_core.errors import CheckpointError, SAEError
from sae_core.protocols.architecture import Bank


class SAE(nn.Module):
    """An SAE for inference: ``encode`` (..., d_in) -> (..., d_sae), ``decode`` back.

    ``cfg`` is its cfg.json; ``non_negative_codes`` comes from its architecture (False: codes may
    be negative, and a latent fires where its code is non-zero). A transcoder
    (``is_transcoder``) decodes into its target's space: ``decode`` gives (..., d_out) and
    ``forward`` maps activations of its input layer to its prediction of the output layer's.
    """

    def __init__(self, bank: Bank, cfg: SAECheckpointConfig, *, non_negative_codes: bool = True) -> None:
        super().__init__()
        self.bank = bank
        self.cfg = cfg
        self.d_in = cfg.d_in
        self.d_sae = cfg.d_sae
        #: width of decode's output: the target's (transcoders) or d_in (SAEs)
        self.d_out = cfg.width_out
        self.is_transcoder = cfg.is_transcoder
        self.architecture = cfg.architecture
        self.non_negative_codes = non_negative_codes

    def _flat(self, x: torch.Tensor, d: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.shape[-1] != d:
            raise SAEError(
                f"SAE {self.cfg.name!r} expects inputs of size {d}, got {x.shape[-1]}; "
                "it was trained on another layer or model"
            )
        return x.reshape(-1, d), x.shape[:-1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d_in) -> codes (..., d_sae)."""
        flat, lead = self._flat(x, self.d_in)
        return self.bank.encode(flat.to(self.W_enc.dtype))[0].reshape(*lead, self.d_sae)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """codes (..., d_sae) -> reconstruction (..., d_out): of the input (SAEs, d_out = d_in)
        or of the target (transcoders)."""
        flat, lead = self._flat(f, self.d_sae)
        return self.bank.decode(flat.unsqueeze(0))[0].reshape(*lead, self.d_out)

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


def build_sae(cfg: SAECheckpointConfig | dict[str, Any], tensors: dict[str, torch.Tensor],
              device: str | torch.device = "cpu") -> SAE:
    """An :class:`SAE` from its config (a dict is read leniently) and checkpoint-layout tensors."""
    from sae_core.plugins import get_component  # lazy: loads pluggy

    if not isinstance(cfg, SAECheckpointConfig):
        cfg = SAECheckpointConfig.from_json(cfg, strict=False)
    arch = get_component("architecture", cfg.architecture).factory
    d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.width_out
    hyper = arch.make_hyper(cfg.hyper, d_sae, strict=False)
    bank = arch.build_bank(d_in, d_sae, [hyper], **({"d_out": cfg.d_out} if cfg.is_transcoder else {}))
    for name, shape in (("W_enc", (d_in, d_sae)), ("W_dec", (d_sae, d_out)), ("b_enc", (d_sae,)), ("b_dec", (d_out,))):
        if name in tensors and tuple(tensors[name].shape) != shape:
            outs = f", d_out={d_out}" if cfg.is_transcoder else ""
            raise CheckpointError(
                f"tensor {name} has shape {tuple(tensors[name].shape)}, but cfg.json says {shape} (d_in={d_in}, d_sae={d_sae}{outs})"
            )
    bank.load_single(0, {k: v.float() for k, v in tensors.items()})
    bank.eval()
    return SAE(bank, cfg, non_negative_codes=bool(arch.non_negative_codes)).to(device)
