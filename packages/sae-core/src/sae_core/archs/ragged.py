"""Ragged sparse codes: every SAE of a bank keeps exactly its own k (and k_aux), nothing padded.

A padded bank takes the top max(k) of every SAE and zeroes the extra columns, so an SAE with
k = 16 in a bank whose largest k is 72 pays 72 columns in the gather, the sparse decode and both
sparse backwards. Here the codes of all SAEs are one flat list of entries instead:

    lat[t]  global latent id  i·d_sae + j   of entry t (SAE i, latent j)          (T,)
    bag[t]  global token id   i·batch + b                                          (T,)
    offsets start of each (SAE, token) bag in the flat list, bags of size k_i      (n·batch,)

ordered by SAE, then token, then rank, so SAE i's entries are exactly those it would have alone
(T = batch · Σ k_i instead of n · batch · max k). One embedding_bag decodes all bags (ragged bag
sizes are native to it), one CSR product gives the encoder's sparse gradient, one scatter the
firing counts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class RaggedCodes:
    """Flat entries of a bank's sparse codes (see the module docstring)."""

    lat: torch.Tensor  # (T,) global latent ids i·d_sae + j
    bag: torch.Tensor  # (T,) global token ids i·batch + b
    offsets: torch.Tensor  # (n·batch,) start of each bag in the flat list
    sae: torch.Tensor  # (T,) SAE index i of each entry
    n: int
    batch: int


def ragged_topk(pre: torch.Tensor, ks: list[int], masks: list[torch.Tensor | None] | None = None) -> RaggedCodes:
    """Each SAE's own top-k_i of ``pre`` (n, batch, d_sae), sorted by value within a token as
    ``torch.topk`` sorts them. ``masks[i]`` (d_sae,) bool restricts SAE i to those latents (AuxK's
    dead latents); k_i = 0 gives SAE i empty bags."""
    n, batch, d_sae = pre.shape
    dev = pre.device
    lats, bags, offs, saes = [], [], [], []
    start = 0
    tokens = torch.arange(batch, device=dev)
    for i, k in enumerate(ks):
        offs.append(start + tokens * k)  # (batch,)
        start += batch * k
        if k == 0:
            continue
        p = pre[i]  # (batch, d_sae)
        if masks is not None and masks[i] is not None:
            p = p.masked_fill(~masks[i][None, :], float("-inf"))
        idx = p.topk(k, dim=-1, sorted=True).indices  # (batch, k)
        lats.append((idx + i * d_sae).reshape(-1))
        bags.append((tokens + i * batch).repeat_interleave(k))
        saes.append(torch.full((batch * k,), i, device=dev, dtype=torch.long))
    empty = torch.zeros(0, dtype=torch.long, device=dev)
    return RaggedCodes(torch.cat(lats) if lats else empty, torch.cat(bags) if bags else empty, torch.cat(offs),
                       torch.cat(saes) if saes else empty, n, batch)


class _GatherFlat(torch.autograd.Function):
    """pre at the entries (lat, bag), with the sparse encoder gradient of
    :mod:`sae_core.archs.sparse_encode` (∂W_enc = S (x − b_dec), S[lat, b] = ∂L/∂v)."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, lat: torch.Tensor, bag: torch.Tensor, x: torch.Tensor,
                W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
        _, batch, d_sae = pre.shape
        ctx.save_for_backward(lat, bag, x, W_enc, b_dec)
        ctx.batch = batch
        pos = bag * d_sae + lat % d_sae  # flat position in pre (n·batch·d_sae)
        return pre.reshape(-1)[pos]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):
        lat, bag, x, W_enc, b_dec = ctx.saved_tensors
        n, d_in, d_sae = W_enc.shape
        g = g.to(x.dtype)
        cols = bag % ctx.batch  # token within the batch
        order = torch.argsort(lat)
        counts = torch.bincount(lat, minlength=n * d_sae)
        crow = torch.zeros(n * d_sae + 1, dtype=torch.long, device=lat.device)
        crow[1:] = torch.cumsum(counts, 0)
        vals = g[order]
        with warnings.catch_warnings():  # "CSR support is in beta": a stable subset is used here
            warnings.simplefilter("ignore", UserWarning)
            S = torch.sparse_csr_tensor(crow, cols[order], vals, (n * d_sae, ctx.batch), check_invariants=False)
        gW_t = S @ x  # (n·d_sae, d_in)
        g_benc = torch.zeros(n * d_sae, device=g.device, dtype=g.dtype).index_add_(0, lat[order], vals).view(n, d_sae)
        gW_t = gW_t.view(n, d_sae, d_in) - g_benc[..., None] * b_dec[:, None, :]  # (x − b_dec), not x
        g_bdec = -torch.bmm(W_enc, g_benc[..., None]).squeeze(-1)  # (n, d_in)
        return None, None, None, None, gW_t.transpose(1, 2).contiguous(), g_benc, g_bdec


def gather_flat(pre: torch.Tensor, codes: RaggedCodes, x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                b_dec: torch.Tensor) -> torch.Tensor:
    """(T,) pre-activations at ``codes``' entries; gradient to W_enc, b_enc, b_dec costs O(T·d_in).
    pre: (n, batch, d_sae) computed without a graph from x (batch, d_in)."""
    return _GatherFlat.apply(pre, codes.lat, codes.bag, x, W_enc, b_enc, b_dec)


def ragged_decode(codes: RaggedCodes, vals: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """Σ_t vals[t] · W_dec[lat[t]] per (SAE, token) bag: (n, batch, d_out). One embedding_bag."""
    n, d_sae, d_out = W_dec.shape
    out = F.embedding_bag(codes.lat, W_dec.reshape(n * d_sae, d_out), codes.offsets,
                          per_sample_weights=vals.to(W_dec.dtype), mode="sum")  # (n·batch, d_out)
    return out.view(n, codes.batch, d_out)


def ragged_fired(codes: RaggedCodes, vals: torch.Tensor, d_sae: int) -> torch.Tensor:
    """(n, d_sae): on how many tokens each latent was active (value > 0)."""
    counts = torch.zeros(codes.n * d_sae, device=vals.device)
    return counts.scatter_add_(0, codes.lat, (vals > 0).float()).view(codes.n, d_sae)


def ragged_l0(codes: RaggedCodes, vals: torch.Tensor) -> torch.Tensor:
    """(n,): mean number of active latents per token of each SAE."""
    active = torch.zeros(codes.n, device=vals.device).index_add_(0, codes.sae, (vals > 0).float())
    return active / codes.batch
