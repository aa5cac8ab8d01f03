"""JumpReLU SAE (Rajamanoharan et al., 2024) trained with straight-through estimators.

    pre = (x − b_dec) W_enc + b_enc,    θ = exp(log_threshold)  (per latent, > 0)
    f   = pre · H(pre − θ)                             (H: Heaviside step)
    L0  = Σ_i H(pre_i − θ_i)
    L   = ||x − x̂||² + λ·w(t)·L0                       (penalty mode)
    L   = ||x − x̂||² + λ·w(t)·(L0 / L0_target − 1)²     (target-L0 mode, when target_l0 is set)

H has zero gradient almost everywhere, so θ learns through pseudo-derivatives with a rectangle
kernel K(u) = 1[|u| < ½] of bandwidth ε:
    ∂f/∂θ := −(θ/ε)·K((pre − θ)/ε),     ∂H/∂θ := −(1/ε)·K((pre − θ)/ε)
(pre itself gets the exact gradient H(pre − θ) through f, and none through L0). Decoder rows are
kept at unit norm. The checkpoint stores θ as ``threshold`` [d_sae].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sae_core.archs.base import Bank, BankArchitecture, TrainContext, TrainOutput, mse_per_sae
from sae_core.errors import ConfigError


def _rect(u: torch.Tensor) -> torch.Tensor:
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(pre, theta, eps)
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        pre, theta, eps = ctx.saved_tensors
        grad_pre = grad * (pre > theta)
        grad_theta = (grad * -(theta / eps) * _rect((pre - theta) / eps)).sum(1, keepdim=True)
        return grad_pre, grad_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(pre, theta, eps)
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        pre, theta, eps = ctx.saved_tensors
        grad_theta = (grad * -(1.0 / eps) * _rect((pre - theta) / eps)).sum(1, keepdim=True)
        return None, grad_theta, None


def jumprelu(pre: torch.Tensor, theta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """pre (n, batch, d_sae), theta (n, 1, d_sae), eps (n, 1, 1)."""
    return _JumpReLU.apply(pre, theta, eps)


def step(pre: torch.Tensor, theta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return _Step.apply(pre, theta, eps)


@dataclass
class JumpReLUHyper:
    l0_coeff: float = 1.0
    target_l0: float | None = None
    bandwidth: float = 0.001
    init_threshold: float = 0.001

    def validate(self, d_sae: int) -> None:
        if self.bandwidth <= 0 or self.init_threshold <= 0:
            raise ConfigError("jumprelu bandwidth and init_threshold must be > 0")
        if self.target_l0 is not None and not 0 < self.target_l0 <= d_sae:
            raise ConfigError(f"target_l0={self.target_l0} must be in (0, d_sae={d_sae}]")


class JumpReLUBank(Bank):
    name: ClassVar[str] = "jumprelu"
    Hyper: ClassVar[type] = JumpReLUHyper
    extra_tensors: ClassVar[tuple[str, ...]] = ("threshold",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        init = self.hyper_tensor("init_threshold").log()[:, None].expand(self.n, self.d_sae)
        self.log_threshold = nn.Parameter(init.clone())

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x)
        return pre * (pre > self.threshold[:, None, :])

    def train_forward(self, x: torch.Tensor, ctx: TrainContext) -> TrainOutput:
        pre = self.pre_acts(x)
        theta = self.threshold[:, None, :]  # (n, 1, d_sae)
        eps = self.hyper_tensor("bandwidth")[:, None, None]
        f = jumprelu(pre, theta, eps)
        recon = self.decode(f)
        mse = mse_per_sae(x, recon)
        l0 = step(pre, theta, eps).sum(-1).mean(-1)  # (n,)
        targets = [h.target_l0 for h in self.hypers]
        penalty = l0
        if any(t is not None for t in targets):
            tgt = torch.tensor([t if t is not None else math.nan for t in targets], device=x.device)
            batch_l0 = ctx.comm.mean(l0)  # nonlinear in the batch mean: use the whole batch's
            penalty = torch.where(torch.isnan(tgt), l0, (batch_l0 / tgt - 1).pow(2))
        coeff = self.hyper_tensor("l0_coeff") * ctx.sparsity_scale
        active = (pre > theta).detach()
        return TrainOutput(
            recon=recon,
            loss=mse + coeff * penalty,
            terms={"mse": mse.detach(), "l0_penalty": penalty.detach()},
            fired=active.float().sum(1),
            l0=l0.detach(),
        )

    def _export_extra(self, name: str, i: int) -> torch.Tensor:
        return self.threshold[i].detach().clone()

    def _import_tensor(self, name: str, i: int, value: torch.Tensor) -> None:
        if name == "threshold":
            self.log_threshold[i].copy_(value.clamp_min(1e-12).log())
        else:
            super()._import_tensor(name, i, value)


class JumpReLU(BankArchitecture):
    """JumpReLU SAE (STE with bandwidth; L0 penalty or target-L0)."""

    name = "jumprelu"
    Hyper = JumpReLUHyper
    bank_cls = JumpReLUBank
