"""Gated SAE (Rajamanoharan et al., 2024): separate "is it on" and "how much" paths.

    x_c    = x − b_dec
    π_gate = x_c W_enc + b_enc                     (gate path; W_enc is W_gate)
    π_mag  = (x_c W_enc) ⊙ exp(r_mag) + b_mag      (magnitude path, weights tied to the gate's)
    f      = 1[π_gate > 0] ⊙ ReLU(π_mag)
    x̂      = f W_dec + b_dec
    L      = ||x − x̂||² + λ·w(t) Σ_i ReLU(π_gate)_i ||W_dec,i|| + ||x − x̂_frozen(ReLU(π_gate))||²
where x̂_frozen decodes with a detached copy of the decoder, so the auxiliary term trains only the
gate. The checkpoint stores ``r_mag`` and ``b_mag`` besides the usual tensors (b_enc is b_gate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from sae_core.archs.base import Bank, BankArchitecture, TrainContext, TrainOutput, mse_per_sae
from sae_core.errors import ConfigError


@dataclass
class GatedHyper:
    l1_coeff: float = 5.0

    def validate(self, d_sae: int) -> None:
        if self.l1_coeff < 0:
            raise ConfigError(f"l1_coeff must be >= 0, got {self.l1_coeff}")


class GatedBank(Bank):
    name: ClassVar[str] = "gated"
    Hyper: ClassVar[type] = GatedHyper
    unit_norm_decoder: ClassVar[bool] = False
    init_decoder_norm: ClassVar[float] = 0.1
    extra_tensors: ClassVar[tuple[str, ...]] = ("r_mag", "b_mag")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.r_mag = nn.Parameter(torch.zeros(self.n, self.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(self.n, self.d_sae))

    def _paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xc = (x if x.dim() == 3 else x.unsqueeze(0)) - self.b_dec[:, None, :]
        proj = torch.bmm(xc, self.W_enc)  # (n, batch, d_sae)
        gate = proj + self.b_enc[:, None, :]
        mag = proj * self.r_mag.exp()[:, None, :] + self.b_mag[:, None, :]
        return gate, mag

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        gate, mag = self._paths(x)
        return (gate > 0) * mag.relu()

    def train_forward(self, x: torch.Tensor, ctx: TrainContext) -> TrainOutput:
        gate, mag = self._paths(x)
        active = gate > 0
        f = active * mag.relu()
        recon = self.decode(f)
        mse = mse_per_sae(x, recon)
        gate_act = gate.relu()
        norms = self.W_dec.norm(dim=-1)  # (n, d_sae)
        l1 = (gate_act * norms[:, None, :]).sum(-1).mean(-1)
        recon_aux = torch.baddbmm(self.b_dec.detach()[:, None, :], gate_act, self.W_dec.detach())
        aux = mse_per_sae(x, recon_aux)
        coeff = self.hyper_tensor("l1_coeff") * ctx.sparsity_scale
        return TrainOutput(
            recon=recon,
            loss=mse + coeff * l1 + aux,
            terms={"mse": mse.detach(), "l1": l1.detach(), "aux": aux.detach()},
            fired=active.float().sum(1),
            l0=active.float().sum(-1).mean(-1),
        )


class Gated(BankArchitecture):
    """Gated SAE (gate/magnitude paths with tied weights)."""

    name = "gated"
    Hyper = GatedHyper
    bank_cls = GatedBank
    saelens_architecture = "gated"
