"""``signed-topk`` — an SAE architecture whose codes keep their sign.

    pre = (x − b_dec) W_enc + b_enc
    f   = pre at the k entries of largest |pre|, 0 elsewhere      (codes may be negative)
    x̂   = f W_dec + b_dec,    L = ||x − x̂||²

``non_negative_codes = False`` tells every consumer (feature statistics, reconstruction, the
viewer, exporters) that a latent fires where its code is non-zero, whatever its sign. There is
no SAELens equivalent, so ``sae export --format saelens`` refuses it and names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from sae_core import Architecture, Bank, ConfigError, TrainContext, TrainOutput, firing_stats, mse_per_sae


@dataclass
class SignedTopKHyper:
    k: int = 8  # latents firing per token

    def validate(self, d_sae: int) -> None:
        if not 1 <= self.k <= d_sae:
            raise ConfigError(f"k={self.k} must be between 1 and d_sae={d_sae}; lower k or raise exp_factor")


class SignedTopKBank(Bank):
    name: ClassVar[str] = "signed-topk"

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, d_in) -> (n, batch, d_sae): each SAE keeps its own k largest |pre|, signed."""
        pre = self.pre_acts(x)  # (n, batch, d_sae)
        ks = self.hyper_tensor("k", torch.long)  # (n,)
        idx = pre.abs().topk(int(ks.max()), dim=-1).indices  # (n, batch, max k), largest first
        own = torch.arange(idx.shape[-1], device=x.device)[None, None, :] < ks[:, None, None]  # beyond own k: off
        return torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx) * own)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.codes(x)

    def train_forward(self, x: torch.Tensor, ctx: TrainContext) -> TrainOutput:
        f = self.codes(x)  # (n, batch, d_sae)
        recon = self.decode(f)  # (n, batch, d_in)
        mse = mse_per_sae(x, recon)  # (n,)
        fired, l0 = firing_stats(f)  # firing = code != 0
        return TrainOutput(recon=recon, loss=mse, fired=fired, l0=l0, terms={"mse": mse.detach()})


class SignedTopK(Architecture):
    """TopK by magnitude with signed codes (k latents fire per token)."""

    name = "signed-topk"
    Hyper = SignedTopKHyper
    bank_cls = SignedTopKBank
    non_negative_codes = False
