"""BatchTopK SAE (Bussmann et al., 2024): top k·B activations over the whole batch.

Training, per SAE, on a batch of B tokens:
    a   = ReLU((x − b_dec) W_enc + b_enc)
    τ_b = the (k·B)-th largest entry of a over the batch
    f   = a · 1[a ≥ τ_b]                         (k active latents per token on average)
    L   = ||x − x̂||² + α_aux ||e − ê||²          (AuxK as in TopK)
    θ  ← m·θ + (1 − m)·τ_b                        (running estimate, momentum m, seeded by τ_0)
Inference is a JumpReLU with one global threshold: f = a · 1[a > θ], so a token's code no longer
depends on the rest of its batch. The checkpoint stores θ as ``threshold`` [d_sae].
Transcoders: a = ReLU((x − b_in) W_enc + b_enc); the MSE and AuxK are against the target y.

The saved θ is *calibrated*, not the running estimate: after the last step the trainer calls
:meth:`BatchTopKBank.calibrate` on the next few batches of the stream and θ becomes the mean of
their τ_b under the final weights. The running EMA lags whenever τ_b drifts (the encoder keeps
growing during training): measured on MiniLM, d_sae 1536, the EMA (m = 0.99, as in SAELens)
gave a checkpoint L0 of 45 for k = 4 after 40 steps and 14.6 for k = 16 after 400; the
calibrated θ gave 4.00 and 15.9 (an EMA started after warmup: 23.9 and 14.3).

Each SAE's gradient is clipped at norm 1 before Adam by default (SAELens's trainer does it;
measured in ``BatchTopKBank``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch

from sae_core import Architecture, Bank, BatchComm, TrainContext, TrainOutput, mse_per_sae
from sae_core.archs.topk import TopKBank, TopKHyper, auxk_loss


@dataclass
class BatchTopKHyper(TopKHyper):
    threshold_momentum: float = 0.99


class BatchTopKBank(Bank):
    name: ClassVar[str] = "batchtopk"
    Hyper: ClassVar[type] = BatchTopKHyper
    init_encoder_scale: ClassVar[float] = TopKBank.init_encoder_scale  # same selection rule, same reason
    # each SAE's gradient clipped to norm 1 before Adam, as SAELens's trainer does: measured with
    # bench/quality.py (MiniLM layer 3, d_sae 768, 300 steps, lr grid 1e-3/3e-3/1e-2;
    # docs/benchmarks.md) held-out FVU at L0 32 / 64 went from 0.2454 / 0.1913 to 0.2377 / 0.1838
    # (SAELens 0.2768 / 0.1884), dead 9.6 / 3.5% -> 7.4 / 3.0%
    grad_clip: ClassVar[float] = TopKBank.grad_clip
    extra_tensors: ClassVar[tuple[str, ...]] = ("threshold",)
    train_matches_inference: ClassVar[bool] = False  # batch top-k in training, threshold at inference

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("threshold", torch.zeros(self.n, self.d_sae))
        self.register_buffer("_threshold_seen", torch.zeros(self.n, dtype=torch.bool))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre_acts(x).relu()
        return a * (a > self.threshold[:, None, :])

    def batch_mask(self, a: torch.Tensor, comm: BatchComm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask of the k·B largest activations of each SAE's batch, and their threshold τ (n,).

        With data-parallel ranks each holding B/world tokens, τ is still that of the whole batch:
        each rank contributes its own k·B largest values (no more can be among the global top),
        and the (k·B)-th largest of the gathered candidates is the global threshold.
        """
        comm = comm or BatchComm()
        n, batch, d_sae = a.shape
        ks = self.hyper_tensor("k", torch.long) * batch * comm.world  # (n,) active entries in the global batch
        kmax = int(ks.max())
        top = a.reshape(n, -1).topk(min(kmax, batch * d_sae), dim=-1, sorted=comm.world == 1).values
        if comm.world > 1:
            top = comm.gather(top, dim=1).topk(kmax, dim=-1, sorted=True).values  # (n, kmax)
        tau = top.gather(1, (ks - 1)[:, None]).squeeze(1)  # (n,)
        mask = (a >= tau[:, None, None]) & (a > 0)
        return mask, tau

    def train_codes(
        self, x: torch.Tensor, comm: BatchComm | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """pre, f, mask (n, batch, d_sae) and τ (n,) for a training batch; updates θ."""
        pre = self.pre_acts(x)
        a = pre.relu()
        mask, tau = self.batch_mask(a.detach(), comm)
        with torch.no_grad():
            m = self.hyper_tensor("threshold_momentum")
            new = torch.where(self._threshold_seen, m * self.threshold[:, 0] + (1 - m) * tau, tau)
            self.threshold.copy_(new[:, None].expand_as(self.threshold))
            self._threshold_seen.fill_(True)
        return pre, a * mask, mask, tau

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor], comm: BatchComm | None = None) -> None:
        """θ ← mean over ``batches`` of each SAE's batch threshold τ_b under the current weights."""
        taus = [self.batch_mask(self.pre_acts(x).relu(), comm)[1] for x in batches]  # [(n,)]
        if taus:
            self.threshold.copy_(torch.stack(taus).mean(0)[:, None].expand_as(self.threshold))
            self._threshold_seen.fill_(True)

    def train_forward(self, x: torch.Tensor, ctx: TrainContext) -> TrainOutput:
        y = self.target(x, ctx)  # x itself, or a transcoder's target
        pre, f, mask, tau = self.train_codes(x, ctx.comm)  # f: (n, batch, d_sae)
        recon = self.decode(f)
        mse = mse_per_sae(y, recon)
        aux = auxk_loss(self, pre, y, recon, ctx.dead)
        return TrainOutput(
            recon=recon,
            loss=mse + aux,
            terms={"mse": mse.detach(), "auxk": aux.detach(), "threshold": tau.detach()},
            fired=mask.float().sum(1),
            l0=mask.float().sum(-1).mean(-1),
        )


class BatchTopK(Architecture):
    """BatchTopK SAE: batch-level top-k in training, learned JumpReLU threshold at inference."""

    name = "batchtopk"
    Hyper = BatchTopKHyper
    bank_cls = BatchTopKBank
    saelens_architecture = "jumprelu"  # inference is a JumpReLU with the learned threshold
    supports_transcoder = True
