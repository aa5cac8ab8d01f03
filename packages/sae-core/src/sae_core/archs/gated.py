"""Gated SAE (Rajamanoharan et al., 2024): separate "is it on" and "how much" paths.

    x_c    = x − b_dec
    π_gate = x_c W_enc + b_enc                     (gate path; W_enc is W_gate)
    π_mag  = (x_c W_enc) ⊙ exp(r_mag) + b_mag      (magnitude path, weights tied to the gate's)
    f      = 1[π_gate > 0] ⊙ ReLU(π_mag)
    x̂      = f W_dec + b_dec
    L      = ||x − x̂||² + λ·w(t) Σ_i ReLU(π_gate)_i ||W_dec,i|| + ||x − x̂_frozen(ReLU(π_gate))||²
where x̂_frozen decodes with a detached copy of the decoder, so the auxiliary term trains only the
gate (the paper's frozen decoder; SAELens trains the decoder through it too). Decoder rows are
kept at unit norm. Defaults taken from SAELens because they measurably help (``GatedBank``): the
encoder starts at 0.1·W_decᵀ and each SAE's gradient is clipped at norm 1 before Adam. The checkpoint stores ``r_mag``
and ``b_mag`` besides the usual tensors (b_enc is b_gate).
Transcoders: x_c = x − b_in (the fixed input centre; b_dec is in the output space) and both
reconstruction terms are against the target y; export folds b_in into b_enc and b_mag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from sae_core import Architecture, Bank, ConfigError, TrainContext, TrainOutput, mse_per_sae


@dataclass
class GatedHyper:
    l1_coeff: float = 5.0

    def validate(self, d_sae: int) -> None:
        if self.l1_coeff < 0:
            raise ConfigError(f"l1_coeff must be >= 0, got {self.l1_coeff}")


class GatedBank(Bank):
    name: ClassVar[str] = "gated"
    Hyper: ClassVar[type] = GatedHyper
    # unit-norm decoder rows (the ||W_dec,i|| weights of the penalty are then 1). With free rows
    # initialised at norm 0.1 the penalty shrinks the rows while exp(r_mag) compensates; measured
    # on MiniLM layer 3 (bench/quality.py, 400 steps): FVU 0.43 at L0 30 with free rows, about
    # 0.30 at that L0 with unit rows
    unit_norm_decoder: ClassVar[bool] = True
    # the encoder starts as 0.1 × the decoder's transpose (SAELens's init: W_enc = W_dec^T with
    # rows of norm 0.1; with unit rows and W_enc = W_dec^T the gate starts with O(1)
    # pre-activations, firing half the dictionary). Measured with bench/quality.py (MiniLM layer 3,
    # d_sae 768, 300 steps, lr 3e-3; docs/benchmarks.md): FVU +18.5% / +34.7% vs SAELens at L0 66 /
    # 25 with scale 1, +2.1% / +2.3% with 0.1 (SAELens's b_dec = 0 and free rows of norm 0.1 were worse)
    init_encoder_scale: ClassVar[float] = 0.1
    # each SAE's gradient clipped to norm 1 before Adam, as SAELens's trainer does: with it (and the
    # 0.1 encoder) FVU at matched L0 is 5-10% *below* SAELens's (same setting: -5.2% at L0 41,
    # -9.7% at L0 16), though at the largest λ more latents die (docs/benchmarks.md)
    grad_clip: ClassVar[float] = 1.0
    extra_tensors: ClassVar[tuple[str, ...]] = ("r_mag", "b_mag")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.r_mag = nn.Parameter(torch.zeros(self.n, self.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(self.n, self.d_sae))

    def _paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # a transcoder's x − b_in (its b_dec lives in the output space); an SAE's x − b_dec
        xc = self.encoder_input(x) if self.transcoder else (x if x.dim() == 3 else x.unsqueeze(0)) - self.b_dec[:, None, :]
        proj = torch.bmm(xc, self.W_enc)  # (n, batch, d_sae)
        gate = proj + self.b_enc[:, None, :]
        mag = proj * self.r_mag.exp()[:, None, :] + self.b_mag[:, None, :]
        return gate, mag

    def _export_extra(self, name: str, i: int) -> torch.Tensor:
        t = super()._export_extra(name, i)
        if name == "b_mag" and self.transcoder:  # π_mag = (x W − b_in W) e^r + b_mag: fold b_in W e^r
            t = t - self.input_shift(i) * self.r_mag[i].detach().exp()
        return t

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        gate, mag = self._paths(x)
        return (gate > 0) * mag.relu()

    def train_forward(self, x: torch.Tensor, ctx: TrainContext) -> TrainOutput:
        y = self.target(x, ctx)  # x itself, or a transcoder's target
        gate, mag = self._paths(x)
        active = gate > 0
        f = active * mag.relu()
        recon = self.decode(f)
        mse = mse_per_sae(y, recon)
        gate_act = gate.relu()
        norms = self.W_dec.norm(dim=-1)  # (n, d_sae)
        l1 = (gate_act * norms[:, None, :]).sum(-1).mean(-1)
        recon_aux = torch.baddbmm(self.b_dec.detach()[:, None, :], gate_act, self.W_dec.detach())
        aux = mse_per_sae(y, recon_aux)
        coeff = self.hyper_tensor("l1_coeff") * ctx.sparsity_scale
        return TrainOutput(
            recon=recon,
            loss=mse + coeff * l1 + aux,
            terms={"mse": mse.detach(), "l1": l1.detach(), "aux": aux.detach()},
            fired=active.float().sum(1),
            l0=active.float().sum(-1).mean(-1),
        )


class Gated(Architecture):
    """Gated SAE (gate/magnitude paths with tied weights)."""

    name = "gated"
    Hyper = GatedHyper
    bank_cls = GatedBank
    saelens_architecture = "gated"
    supports_transcoder = True
