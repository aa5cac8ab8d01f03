"""Matryoshka SAE (Bussmann et al., 2025; Nabeshima, 2024): nested dictionaries.

Latents are ordered; for nested prefix sizes m_1 < m_2 < ... < m_G = d_sae the SAE must also
reconstruct x from its first m_g latents alone:
    x̂_g = f[:m_g] W_dec[:m_g] + b_dec
    L   = (1/G) Σ_g ||x − x̂_g||² + α_aux ||e − ê||²
so early latents learn general features and later ones refine them. The code f comes from a TopK
(``base = "topk"``) or BatchTopK (``base = "batchtopk"``) encoder; prefixes default to
d_sae/8, d_sae/4, d_sae/2, d_sae. Inference is that of the base architecture. The 1/G weighting
follows dictionary_learning's default group weights (SAELens sums the prefix losses instead).
Transcoders: the base encoder reads x − b_in (the fixed input centre) and every prefix reconstructs the target y.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from sae_core import Architecture, ConfigError, TrainContext, TrainOutput, mse_per_sae, sparse_decode
from sae_core.archs.batchtopk import BatchTopKBank, BatchTopKHyper
from sae_core.archs.topk import auxk_loss, fired_counts, topk_codes


@dataclass
class MatryoshkaHyper(BatchTopKHyper):
    base: Literal["topk", "batchtopk"] = "batchtopk"
    prefixes: list[int] = field(default_factory=list)

    def validate(self, d_sae: int) -> None:
        super().validate(d_sae)
        if not self.prefixes:
            self.prefixes = sorted({max(1, d_sae // 8), max(1, d_sae // 4), max(1, d_sae // 2), d_sae})
        ok = sorted(set(self.prefixes)) == self.prefixes and self.prefixes[0] >= 1 and self.prefixes[-1] == d_sae
        if not ok:
            raise ConfigError(f"matryoshka prefixes must strictly increase and end at d_sae={d_sae}, got {self.prefixes}")


class MatryoshkaBank(BatchTopKBank):
    """Each SAE has its own prefixes: the bank decodes at the union of all prefix ends (one
    cumulative pass over the latents) and weights each SAE's losses by its own prefixes only."""

    name: ClassVar[str] = "matryoshka"
    Hyper: ClassVar[type] = MatryoshkaHyper
    # gradient clipped at norm 1, inherited from BatchTopKBank and measured here too with
    # bench/quality.py (docs/benchmarks.md): held-out FVU at L0 32 / 64 went from 0.2652 / 0.1884
    # to 0.2595 / 0.1873 (SAELens 0.3124 / 0.2188), dead 34.4 / 26.9% -> 33.4 / 25.2%
    grad_clip: ClassVar[float] = BatchTopKBank.grad_clip

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        bases = {h.base for h in self.hypers}
        if len(bases) > 1:
            raise ConfigError("matryoshka SAEs of one bank must share `base`; the trainer puts each base in its own bank")
        self.base = bases.pop()
        self.train_matches_inference = self.base == "topk"
        #: union of every SAE's prefix ends, and (n, len(ends)) weights 1/G_i on SAE i's own ends
        self.ends = sorted({m for h in self.hypers for m in h.prefixes})
        w = torch.zeros(self.n, len(self.ends))
        for i, h in enumerate(self.hypers):
            for m in h.prefixes:
                w[i, self.ends.index(m)] = 1.0 / len(h.prefixes)
        self.register_buffer("prefix_weights", w, persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.base == "topk":
            idx, vals = topk_codes(self.pre_acts(x), self.hyper_tensor("k", torch.long))
            return torch.zeros(*idx.shape[:2], self.d_sae, device=x.device).scatter_(-1, idx, vals)
        return super().encode(x)

    @torch.no_grad()
    def calibrate(self, batches, comm=None) -> None:
        if self.base == "batchtopk":
            super().calibrate(batches, comm)

    def train_forward(self, x: torch.Tensor, ctx: TrainContext) -> TrainOutput:
        y = self.target(x, ctx)  # x itself, or a transcoder's target
        recons = []  # reconstruction from the first m latents, for every m in self.ends
        if self.base == "batchtopk":
            pre, f, mask, _ = self.train_codes(x, ctx.comm)  # f: (n, batch, d_sae)
            r, lo = self.b_dec[:, None, :].expand(self.n, x.shape[0], self.d_out), 0
            for m in self.ends:
                r = torch.baddbmm(r, f[..., lo:m], self.W_dec[:, lo:m])  # (n, batch, d_in)
                recons.append(r)
                lo = m
            fired, l0 = mask.float().sum(1), mask.float().sum(-1).mean(-1)
        else:
            pre = self.pre_acts(x)
            idx, vals = topk_codes(pre, self.hyper_tensor("k", torch.long))
            recons = [sparse_decode(idx, vals * (idx < m), self.W_dec) + self.b_dec[:, None, :] for m in self.ends]
            fired, l0 = fired_counts(idx, vals, self.d_sae), (vals > 0).float().sum(-1).mean(-1)
        recon = recons[-1]  # every SAE's prefixes end at d_sae
        mses = torch.stack([mse_per_sae(y, r) for r in recons], dim=-1)  # (n, len(ends))
        nested = (mses * self.prefix_weights).sum(-1)  # (n,)
        aux = auxk_loss(self, pre, y, recon, ctx.dead)
        return TrainOutput(
            recon=recon,
            loss=nested + aux,
            terms={"mse": mses[:, -1].detach(), "nested_mse": nested.detach(), "auxk": aux.detach()},
            fired=fired,
            l0=l0,
        )


class Matryoshka(Architecture):
    """Matryoshka SAE over a TopK or BatchTopK encoder (nested prefix losses)."""

    name = "matryoshka"
    Hyper = MatryoshkaHyper
    bank_cls = MatryoshkaBank
    supports_transcoder = True

    @classmethod
    def bank_key(cls, hyper: MatryoshkaHyper) -> tuple:
        return (hyper.base,)

    @classmethod
    def saelens_target(cls, hyper: dict) -> str | None:
        """Inference is the base encoder's: TopK, or BatchTopK's JumpReLU threshold."""
        return "topk" if hyper.get("base") == "topk" else "jumprelu"
