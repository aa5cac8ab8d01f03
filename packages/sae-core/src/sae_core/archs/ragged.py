"""Ragged sparse codes: every SAE of a bank keeps exactly its own k (and k_aux), nothing padded,
and each SAE's sparse work runs on its own tensors.

A padded bank takes the top max(k) of every SAE and zeroes the extra columns, so an SAE with
k = 16 in a bank whose largest k is 72 pays 72 columns in the gather, the sparse decode and both
sparse backwards. Here each SAE's codes are its own flat list of entries:

    lat[t]  latent id j of entry t, token by token, by rank within a token     (batch·k,)
    offsets start of each token's bag: b·k                                       (batch,)

One ``embedding_bag`` per SAE decodes them, one CSR product per SAE gives the encoder's sparse
gradient (:class:`_EncoderEntries`). The loss depends on the pre-activations only at the chosen
entries; autograd through the dense encoder matmul would still compute two dense
(batch × d_in × d_sae) products in the backward pass, each as costly as the forward. So the
forward matmul runs without a graph (it only chooses the latents) and the backward uses only the
entries, with g = ∂L/∂v at entry (b, j):

    ∂L/∂W_enc[:, j] = Σ_{b: (b, j) an entry} g · (x_b − b_dec)     (a sparse × dense product)
    ∂L/∂b_enc[j]    = Σ_{b: (b, j) an entry} g
    ∂L/∂b_dec       = −W_enc ∂L/∂b_enc

(batch 4096, d_in 768, d_sae 6144, k 32: ~0.2 GFLOP instead of ~77 GFLOP per SAE: a TopK step
costs about one dense matmul instead of three). An SAE's sparse work is *not* merged across the bank: one
flat call over a bank of 8 (d_sae 6144, d_in 768, batch 4096) spreads its gathers over eight
decoders (150 MB) instead of one (19 MB) and measured slower than the 8 calls one by one
(embedding_bag forward 265 vs 91 ms, its backward 845 vs 402 ms, the CSR sort 217 vs 32 ms;
2-core CPU). Per SAE, a bank step costs what the single steps cost.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class Codes:
    """One SAE's ragged codes: each of ``batch`` tokens' k latents (see the module docstring)."""

    lat: torch.Tensor  # (batch·k,) latent ids in [0, d_sae), token by token
    k: int
    batch: int

    def offsets(self) -> torch.Tensor:
        return torch.arange(self.batch, device=self.lat.device) * self.k  # (batch,)

    def tokens(self) -> torch.Tensor:
        return torch.arange(self.batch, device=self.lat.device).repeat_interleave(self.k)  # (batch·k,)


def topk_entries(p: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> tuple[Codes, torch.Tensor]:
    """One SAE's top-k of its pre-activations ``p`` (batch, d_sae), sorted by value within a token
    as ``torch.topk`` sorts them, and their values (batch·k,). ``mask`` (d_sae,) bool restricts it
    to those latents (AuxK's dead latents); k = 0 gives empty bags."""
    batch = p.shape[0]
    if k == 0:
        return Codes(p.new_zeros(0, dtype=torch.long), 0, batch), p.new_zeros(0)
    if mask is not None:
        p = p.masked_fill(~mask[None, :], float("-inf"))
    vals, idx = p.topk(k, dim=-1, sorted=True)  # (batch, k)
    return Codes(idx.reshape(-1), k, batch), vals.reshape(-1)


@dataclass
class Entries:
    """Where one SAE's pre-activations enter the loss: ragged entries and, for AuxK, a dense block."""

    lat: torch.Tensor  # (T_i,) latent ids (its codes, then AuxK's ragged entries)
    tok: torch.Tensor  # (T_i,) token of each entry
    block: torch.Tensor | None = None  # (m_i,) latent ids of its columns of the dense block


class _EncoderEntries(torch.autograd.Function):
    """Pre-activations chosen without a graph, given the sparse encoder gradient of the module
    docstring SAE by SAE: ∂W_enc = S (x − b_dec) with S[j, b] = ∂L/∂v for the entries, plus
    G^T (x − b_dec) for the block's columns."""

    @staticmethod
    def forward(ctx: Any, vals: torch.Tensor, block: torch.Tensor, entries: list[Entries], x: torch.Tensor,
                W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(x, W_enc, b_dec)
        ctx.entries = entries
        return vals.clone(), block.clone()  # (ΣT_i,), (batch, M)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor, g_block: torch.Tensor | None):
        x, W_enc, b_dec = ctx.saved_tensors
        n, _, d_sae = W_enc.shape
        g = g.to(x.dtype)
        gW = torch.empty_like(W_enc)  # (n, d_in, d_sae)
        g_benc = torch.zeros(n, d_sae, device=g.device, dtype=g.dtype)
        g_bdec = torch.empty_like(b_dec)  # (n, d_in)
        t = s = 0
        for i, e in enumerate(ctx.entries):
            gWt = _sparse_grad(e, g[t : t + e.lat.shape[0]], x, d_sae, g_benc[i])  # (d_sae, d_in)
            t += e.lat.shape[0]
            if e.block is not None and g_block is not None:
                gb = g_block[:, s : s + e.block.shape[0]].to(x.dtype)  # (batch, m_i)
                gWt.index_add_(0, e.block, gb.T @ x)  # one GEMM for the SAE's dead latents
                g_benc[i].index_add_(0, e.block, gb.sum(0))
            s += 0 if e.block is None else e.block.shape[0]
            gWt.addr_(g_benc[i], b_dec[i], alpha=-1.0)  # (x − b_dec), not x: − g_benc ⊗ b_dec
            gW[i].copy_(gWt.T)
            g_bdec[i] = -(W_enc[i] @ g_benc[i])  # (d_in,); one bmm over the bank measured far slower on CPU
        return None, None, None, None, gW, g_benc, g_bdec


def _sparse_grad(e: Entries, g: torch.Tensor, x: torch.Tensor, d_sae: int, g_benc: torch.Tensor) -> torch.Tensor:
    """S x with S[lat, tok] = g (one CSR product; duplicates sum): (d_sae, d_in); adds Σ g per
    latent into ``g_benc`` (d_sae,)."""
    order = torch.argsort(e.lat)
    counts = torch.bincount(e.lat, minlength=d_sae)
    crow = torch.zeros(d_sae + 1, dtype=torch.long, device=e.lat.device)
    crow[1:] = torch.cumsum(counts, 0)
    vals = g[order]
    g_benc.index_add_(0, e.lat[order], vals)
    with warnings.catch_warnings():  # "CSR support is in beta": a stable subset is used here
        warnings.simplefilter("ignore", UserWarning)
        S = torch.sparse_csr_tensor(crow, e.tok[order], vals, (d_sae, x.shape[0]), check_invariants=False)
    return S @ x


def encoder_entries(vals: torch.Tensor, block: torch.Tensor | None, entries: list[Entries], x: torch.Tensor,
                    W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``vals`` (ΣT_i,), every SAE's pre-activations at its entries in order, and ``block``
    (batch, M), those of the dense block's columns at every token, both computed without a graph
    from x (batch, d_in), returned with their gradient to W_enc, b_enc and b_dec: O(T_i·d_in) per
    SAE for the entries, one (m_i × batch × d_in) GEMM for an SAE's block columns."""
    block = vals.new_zeros(x.shape[0], 0) if block is None else block
    return _EncoderEntries.apply(vals, block, entries, x, W_enc, b_enc, b_dec)


def decode_codes(codes: Codes, vals: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """Σ_t vals[t] · W_dec[lat[t]] per token bag: (batch, d_out), one embedding_bag.
    W_dec: one SAE's (d_sae, d_out), e.g. an element of ``bank.W_dec.unbind(0)``."""
    if codes.k == 0:
        return W_dec.new_zeros(codes.batch, W_dec.shape[1])
    return F.embedding_bag(codes.lat, W_dec, codes.offsets(), per_sample_weights=vals.to(W_dec.dtype), mode="sum")


def fired_of(codes: Codes, vals: torch.Tensor, d_sae: int) -> torch.Tensor:
    """(d_sae,): on how many tokens each latent was active (value > 0)."""
    return torch.zeros(d_sae, device=vals.device).scatter_add_(0, codes.lat, (vals > 0).float())
