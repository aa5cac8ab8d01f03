"""JumpReLU SAE (Rajamanoharan et al., 2024) trained with straight-through estimators.

    pre = (x − b_dec) W_enc + b_enc,    θ ≥ 0 per latent (a parameter, projected to θ ≥ 0)
    f   = pre · H(pre − θ)                             (H: Heaviside step)
    l0  = Σ_i H(pre_i − θ_i)                            (per token)
    L   = ||x − x̂||² + λ·w(t)·L0,          L0 = E_batch[l0]      (penalty mode)
    L   = ||x − x̂||² + λ·w(t)·(2/T)·(L0 − T)²                    (target mode, target_l0 = T)

H has zero gradient almost everywhere, so θ learns through pseudo-derivatives with a rectangle
kernel K(u) = 1[|u| < ½] of bandwidth ε:
    ∂f/∂θ := −(θ/ε)·K((pre − θ)/ε),     ∂H/∂θ := −(1/ε)·K((pre − θ)/ε)
(pre itself gets the exact gradient H(pre − θ) through f, and none through l0: DeepMind's STE).
Decoder rows are kept at unit norm. The checkpoint stores θ as ``threshold`` [d_sae].
Transcoders: pre = (x − b_in) W_enc + b_enc and the MSE is against the target y.

Choices, and why (measured on MiniLM layer-3 residuals, d_sae 1536, batch 256, lr 3e-3, 400 steps;
docs/benchmarks.md has the table):

- θ is parametrised directly, as in Gemma Scope, dictionary_learning and SAELens ≥ 6. The old
  log-θ parametrisation moved θ multiplicatively by ~lr per Adam step, so from 1e-3 it never
  reached the O(1) scale of normalised pre-activations: target_l0 = 16 gave L0 713.
- θ starts at the data's scale: each latent's θ is the quantile of its own pre-activations (on
  the trainer's initialisation sample) at which it fires on ``init_l0 / d_sae`` of tokens
  (Anthropic's 2025 init idea: every latent starts alive, at a known rate). Starting denser than
  the target (``init_l0`` = 4·T, 64 in penalty mode) kept fewer latents dead than starting at T.
- Target mode is a quadratic in the batch's mean L0 with Gemma Scope 2's scale 2/T. The form
  λ(L0/T − 1)² of dictionary_learning is 2T times weaker and did not move L0 at all in 400 steps
  (targets 16 and 48 both ended at 17); Gemma Scope 2's per-token (2/T)(l0 − T)² also penalises
  the spread of l0 over tokens, which biased L0 low (planted data, 300 steps, T = 8: 5.7 against
  6.6 for the batch-mean form). The batch-mean form reached 16.4 and 48.3 on MiniLM; under
  data parallelism the mean is taken over the whole batch (:class:`BatchComm`).
- Bandwidth ε = 0.3 in normalised units (pre-activations are O(1) when E||x|| = √d_in): the
  paper's 0.001 is relative to its own, √d_in smaller, input scale; smaller ε gave too few tokens
  inside the kernel to move θ in a short run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sae_core import Architecture, Bank, ConfigError, TrainContext, TrainOutput, mse_per_sae


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
    target_l0: float | None = None  # set: quadratic penalty around this L0 (target mode)
    bandwidth: float = 0.3
    init_threshold: float | None = None  # set: every θ starts here instead of at the data's scale
    init_l0: float | None = None  # data-scaled init: starting L0 (default 4·target_l0, or 64)

    def validate(self, d_sae: int) -> None:
        if self.bandwidth <= 0:
            raise ConfigError(f"jumprelu bandwidth must be > 0, got {self.bandwidth}")
        if self.init_threshold is not None and self.init_threshold < 0:
            raise ConfigError(f"jumprelu init_threshold must be >= 0, got {self.init_threshold}")
        if self.l0_coeff < 0:
            raise ConfigError(f"l0_coeff must be >= 0, got {self.l0_coeff}")
        if self.target_l0 is not None and not 0 < self.target_l0 <= d_sae:
            raise ConfigError(f"target_l0={self.target_l0} must be in (0, d_sae={d_sae}]")
        if self.init_l0 is not None and not 0 < self.init_l0 <= d_sae:
            raise ConfigError(f"init_l0={self.init_l0} must be in (0, d_sae={d_sae}]")

    def start_l0(self, d_sae: int) -> float:
        """L0 the data-scaled init aims at (at most half the dictionary)."""
        l0 = self.init_l0 if self.init_l0 is not None else (4 * self.target_l0 if self.target_l0 else 64.0)
        return min(l0, d_sae / 2)


class JumpReLUBank(Bank):
    name: ClassVar[str] = "jumprelu"
    Hyper: ClassVar[type] = JumpReLUHyper
    extra_tensors: ClassVar[tuple[str, ...]] = ("threshold",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        init = torch.tensor([h.init_threshold if h.init_threshold is not None else 0.0 for h in self.hypers])
        self.threshold = nn.Parameter(init[:, None].expand(self.n, self.d_sae).clone())  # (n, d_sae)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """θ_j = the (1 − init_l0/d_sae) quantile of latent j's pre-activations on ``x`` (m, d_in)."""
        m = x.shape[0]
        for i, h in enumerate(self.hypers):
            if h.init_threshold is not None:
                continue
            rank = min(m, max(1, round(m * (1.0 - h.start_l0(self.d_sae) / self.d_sae))))  # k-th smallest
            xc = x.to(self.W_enc) - self.input_bias()[i]  # (m, d_in): x − b_dec (x − b_in for transcoders)
            for lo in range(0, self.d_sae, 4096):  # bounded memory: (m, 4096) pre-activations at a time
                pre = torch.addmm(self.b_enc[i, lo : lo + 4096], xc, self.W_enc[i, :, lo : lo + 4096])
                self.threshold[i, lo : lo + 4096] = pre.kthvalue(rank, dim=0).values.clamp_min(0.0)

    @torch.no_grad()
    def post_step(self) -> None:
        super().post_step()
        self.threshold.clamp_(min=0.0)  # θ < 0 would let negative pre-activations through

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x)
        return pre * (pre > self.threshold[:, None, :])

    def splice_encode(self, x: torch.Tensor) -> torch.Tensor:
        """The codes of :meth:`encode` through the straight-through estimator: end-to-end training
        (``--e2e``) trains θ by ∂f/∂θ = −(θ/ε)·K((pre − θ)/ε), as the reconstruction term does."""
        pre = self.pre_acts(x)  # (n, batch, d_sae)
        return jumprelu(pre, self.threshold[:, None, :], self.hyper_tensor("bandwidth")[:, None, None])

    def train_forward(self, x: torch.Tensor, ctx: TrainContext) -> TrainOutput:
        y = self.target(x, ctx)  # x itself, or a transcoder's target
        pre = self.pre_acts(x)  # (n, batch, d_sae)
        theta = self.threshold[:, None, :]  # (n, 1, d_sae)
        eps = self.hyper_tensor("bandwidth")[:, None, None]
        f = jumprelu(pre, theta, eps)
        recon = self.decode(f)
        mse = mse_per_sae(y, recon)
        tok_l0 = step(pre, theta, eps).sum(-1)  # (n, batch)
        targets = [h.target_l0 for h in self.hypers]
        penalty = tok_l0.mean(-1)  # (n,)
        if any(t is not None for t in targets):
            has_target = torch.tensor([t is not None for t in targets], device=x.device)
            tgt = torch.tensor([t if t is not None else 1.0 for t in targets], device=x.device)[:, None]  # finite
            batch_l0 = ctx.comm.mean(tok_l0.mean(-1, keepdim=True))  # (n, 1): the whole batch's mean L0
            quad = (2.0 / tgt * (batch_l0 - tgt).pow(2)).squeeze(-1)  # (n,)
            penalty = torch.where(has_target, quad, penalty)  # both branches finite: no 0·NaN in backward
        coeff = self.hyper_tensor("l0_coeff") * ctx.sparsity_scale
        active = (pre > theta).detach()
        return TrainOutput(
            recon=recon,
            loss=mse + coeff * penalty,
            terms={"mse": mse.detach(), "l0_penalty": penalty.detach()},
            fired=active.float().sum(1),
            l0=active.float().sum(-1).mean(-1),
        )


class JumpReLU(Architecture):
    """JumpReLU SAE (STE with bandwidth; L0 penalty or target-L0)."""

    name = "jumprelu"
    Hyper = JumpReLUHyper
    bank_cls = JumpReLUBank
    saelens_architecture = "jumprelu"
    supports_transcoder = True
