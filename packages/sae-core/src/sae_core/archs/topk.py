"""TopK SAE (Gao et al., 2024) with the AuxK loss for dead latents.

    pre = (x − b_dec) W_enc + b_enc
    f   = ReLU(TopK_k(pre))                       (k largest pre-activations kept, rest 0)
    x̂   = f W_dec + b_dec                         (sparse: only k decoder rows per token)
    e   = x − x̂
    ê   = ReLU(TopK_kaux(pre restricted to dead latents)) W_dec
    L   = ||x − x̂||² + α_aux ||e − ê||²           (α_aux = 1/32, k_aux = d_in/2 by default)

Transcoders (a bank built with d_out): pre = (x − b_in) W_enc + b_enc with b_in the fixed input
centre, and x̂, e, ê and L are those of the target y instead of x (e = y − ŷ, k_aux = d_out/2 by
default).

Decoder rows are kept at unit norm with the radial gradient projected out; each SAE's gradient is
clipped at norm 1 before Adam by default (SAELens's trainer does it; measured in ``TopKBank``). k may differ across
the SAEs of a bank: training keeps each SAE's own k and k_aux (ragged codes, no padding); inference
``encode`` takes the top max(k) and zeroes each SAE's values beyond its own k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from sae_core import Architecture, Bank, ConfigError, TrainContext, TrainOutput, mse_per_sae, sparse_decode
from sae_core.archs.dead_block import block_codes, block_decode
from sae_core.archs.ragged import decode_codes, encoder_entries, fired_of
from sae_core.archs.topk_select import aux_ks, select


@dataclass
class TopKHyper:
    k: int = 32
    aux_k: int | None = None  # default: d_in // 2 (d_out // 2 for transcoders)
    aux_coeff: float = 1 / 32

    def validate(self, d_sae: int) -> None:
        if not 1 <= self.k <= d_sae:
            raise ConfigError(f"k={self.k} must be between 1 and d_sae={d_sae}; lower k or raise exp_factor")
        if self.aux_k is not None and self.aux_k < 1:
            raise ConfigError(f"aux_k must be >= 1, got {self.aux_k}")
        if self.aux_coeff < 0:
            raise ConfigError(f"aux_coeff must be >= 0, got {self.aux_coeff}")


def own_k_values(vals: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """ReLU of the sorted top-max(k) values (n, batch, max k), zeroed past each SAE's own k."""
    keep = torch.arange(vals.shape[-1], device=vals.device)[None, :] < ks[:, None]  # (n, kmax)
    return vals.relu() * keep[:, None, :]


def topk_codes(pre: torch.Tensor, ks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and ReLU'd values of each SAE's top-k: (n, batch, max k), zero past own k."""
    vals, idx = pre.topk(int(ks.max()), dim=-1, sorted=True)  # (n, batch, kmax)
    return idx, own_k_values(vals, ks)


def fired_counts(idx: torch.Tensor, vals: torch.Tensor, d_sae: int) -> torch.Tensor:
    """(n, d_sae): how many tokens of the batch each latent was active on."""
    n = idx.shape[0]
    counts = torch.zeros(n, d_sae, device=idx.device)
    return counts.scatter_add_(1, idx.reshape(n, -1), (vals > 0).float().reshape(n, -1))


def aux_indices(bank: Bank, pre: torch.Tensor, dead: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Indices (n, batch, max k_aux) of the largest pre-activations among dead latents, and the
    mask (n, max k_aux) of the columns inside each SAE's own k_aux; None if no SAE has a dead latent.

    The bank takes the top max(k_aux) once; an SAE with a smaller k_aux (or fewer dead latents)
    ignores the columns past its own, so each SAE's AuxK is the one it would have alone.
    """
    if dead is None or not bool(dead.any()):
        return None
    ks = aux_ks(bank, dead)  # (n,)
    kmax = int(ks.max())
    masked = pre.detach().masked_fill(~dead[:, None, :], float("-inf"))  # (n, batch, d_sae)
    idx = masked.topk(kmax, dim=-1).indices  # (n, batch, kmax)
    keep = torch.arange(kmax, device=pre.device)[None, :] < ks[:, None]  # (n, kmax)
    return idx, keep


def auxk_from_values(
    bank: Bank, aux: tuple[torch.Tensor, torch.Tensor] | None, vals: torch.Tensor | None, x: torch.Tensor,
    recon: torch.Tensor, dead: torch.Tensor | None,
) -> torch.Tensor:
    """α_aux · ||e − ê||², ê decoded from the dead latents' pre-activations ``vals`` at ``aux``'s
    indices (only the columns each SAE keeps); zero for SAEs without dead latents. ``x`` is what
    the SAE reconstructs (a transcoder's target), e = x − recon."""
    if aux is None or vals is None or dead is None:
        return recon.new_zeros(recon.shape[0])
    idx, keep = aux
    vals = torch.where(keep[:, None, :], vals, torch.zeros_like(vals)).relu()  # (n, batch, kmax)
    e = (x - recon).detach()  # (n, batch, d_in)
    e_hat = sparse_decode(idx, vals, bank.W_dec)
    has_dead = dead.any(-1).to(recon.dtype)  # (n,)
    return bank.hyper_tensor("aux_coeff") * (e_hat - e).pow(2).sum(-1).mean(-1) * has_dead


def auxk_loss(
    bank: Bank, pre: torch.Tensor, x: torch.Tensor, recon: torch.Tensor, dead: torch.Tensor | None
) -> torch.Tensor:
    """α_aux · ||e − ê||² with ê reconstructed from the top-k_aux dead latents (0 if none dead)."""
    aux = aux_indices(bank, pre, dead)
    return auxk_from_values(bank, aux, None if aux is None else pre.gather(-1, aux[0]), x, recon, dead)


class TopKBank(Bank):
    name: ClassVar[str] = "topk"
    Hyper: ClassVar[type] = TopKHyper
    # A small tied encoder (the decoder stays unit-norm): selection is scale-invariant, and
    # Adam's steps are larger relative to the encoder, which learns faster early on (measured on
    # MiniLM residuals, 300 steps: FVU 0.160 -> 0.148 at lr 1e-3, 0.121 -> 0.118 at 3e-3, k=32).
    init_encoder_scale: ClassVar[float] = 0.1
    # each SAE's gradient clipped to norm 1 before Adam, as SAELens's trainer does: measured with
    # bench/quality.py (MiniLM layer 3, d_sae 768, 300 steps, lr grid 1e-3/3e-3/1e-2;
    # docs/benchmarks.md) FVU at k 16 / 32 / 64 went from 0.3067 / 0.2516 / 0.1965 to 0.2992 /
    # 0.2453 / 0.1945 (SAELens 0.3288 / 0.2497 / 0.1910), dead 10.9 / 6.7 / 2.5% -> 8.5 / 4.2 / 0.8%
    grad_clip: ClassVar[float] = 1.0
    # AuxK on the dense block of an SAE's m dead latents when m <= ratio · k_aux, else ragged
    # entries (sae_core.archs.dead_block; 0 forces ragged, inf the block). Measured with
    # bench/train_throughput.py --aux-paths on a 2-core CPU: see docs/benchmarks.md
    aux_block_ratio: ClassVar[float] = 6.0

    def ks(self) -> torch.Tensor:
        return self.hyper_tensor("k", torch.long)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        idx, vals = topk_codes(self.pre_acts(x), self.ks())
        return torch.zeros(*idx.shape[:2], self.d_sae, device=x.device).scatter_(-1, idx, vals)

    def train_forward(self, x: torch.Tensor, ctx: TrainContext) -> TrainOutput:
        """Ragged: each SAE's sparse steps (top-k, gather, decode, sparse backward, AuxK) are
        sized by its own k and k_aux, not the bank's largest, and run on its own tensors (see
        :mod:`sae_core.archs.ragged`); the latents are chosen SAE by SAE
        (:mod:`sae_core.archs.topk_select`) and AuxK takes the dense block of dead latents where
        that is cheaper (:mod:`sae_core.archs.dead_block`)."""
        y = self.target(x, ctx)  # x itself, or a transcoder's target
        sel = select(self, x, ctx.dead)  # no graph: gradients come back through encoder_entries
        v, block = encoder_entries(sel.vals, sel.block_vals, sel.entries, x, self.W_enc, self.b_enc, self.input_bias())
        W_dec = self.W_dec.unbind(0)  # each SAE's (d_sae, d_out): its decode touches only its own
        recon, e_hat, fired, l0, t = [], [], [], [], 0
        for i, (c, a) in enumerate(zip(sel.codes, sel.aux, strict=True)):
            tc, ta = c.lat.shape[0], a.lat.shape[0]  # SAE i's entries: tc codes, then ta AuxK ones
            vals, aux_vals = v[t : t + tc].relu(), v[t + tc : t + tc + ta].relu()  # (tc,), (ta,)
            t += tc + ta
            recon.append(decode_codes(c, vals, W_dec[i]))  # (batch, d_out)
            e_hat.append(decode_codes(a, aux_vals, W_dec[i]))  # 0 where k_aux = 0 (or on the block)
            fired.append(fired_of(c, vals.detach(), self.d_sae))
            l0.append((vals.detach() > 0).sum() / c.batch)
        block_f = block_codes(block, sel.block) if sel.block else None  # (batch, M)
        for m in sel.block:
            e_hat[m.sae] = e_hat[m.sae] + block_decode(block_f, m, W_dec[m.sae])
        recon_ = torch.stack(recon) + self.b_dec[:, None, :]  # (n, batch, d_out)
        mse = mse_per_sae(y, recon_)
        aux_loss = recon_.new_zeros(self.n)
        if ctx.dead is not None and bool(ctx.dead.any()):
            e = (y - recon_).detach()  # (n, batch, d_out)
            has_dead = ctx.dead.any(-1).to(recon_.dtype)  # (n,)
            aux_loss = self.hyper_tensor("aux_coeff") * (torch.stack(e_hat) - e).pow(2).sum(-1).mean(-1) * has_dead
        return TrainOutput(recon=recon_, loss=mse + aux_loss, terms={"mse": mse.detach(), "auxk": aux_loss.detach()},
                           fired=torch.stack(fired), l0=torch.stack(l0).to(recon_.dtype))


class TopK(Architecture):
    """TopK SAE with AuxK (k active latents per token)."""

    name = "topk"
    Hyper = TopKHyper
    bank_cls = TopKBank
    saelens_architecture = "topk"  # SAELens topk without decoder-norm rescaling
    supports_transcoder = True
