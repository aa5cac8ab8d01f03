"""TopK's training-time choice of latents, made SAE by SAE.

A TopK bank's forward needs, for every SAE, its top-k latents per token and, for AuxK, the top
k_aux among its dead latents (as ragged entries or as the dense block of
:mod:`sae_core.archs.dead_block`). All of it is read from the pre-activations
(x − b_dec) W_enc + b_enc, a (batch, d_sae) matrix per SAE computed without a graph (the gradient
comes back through :func:`~sae_core.archs.ragged.encoder_entries`). Each SAE's matrix is computed,
searched and dropped before the next one's: a bank never holds the (n, batch, d_sae) stack
(805 MB for 8 SAEs at batch 4096, d_sae 6144), so its peak memory is one SAE's matrix and its step
costs what n single steps cost, with the batch read once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sae_core.archs.dead_block import BlockMember, split_aux
from sae_core.archs.ragged import Codes, Entries, topk_entries


def aux_ks(bank: Any, dead: torch.Tensor) -> torch.Tensor:
    """(n,) each SAE's own k_aux: its ``aux_k`` (default d_out/2: half the width of what it
    reconstructs, d_in for SAEs), capped by its dead latents."""
    wanted = torch.tensor([min(h.aux_k or bank.d_out // 2, bank.d_sae) for h in bank.hypers], device=dead.device)
    return torch.minimum(wanted, dead.sum(-1))


@dataclass
class Selection:
    """What a TopK bank's training step reads from its pre-activations, SAE by SAE."""

    codes: list[Codes]  # each SAE's top-k
    aux: list[Codes]  # each SAE's AuxK ragged entries (k 0: none, or on the block)
    vals: torch.Tensor  # (Σ T_i,) pre-activations: SAE 0's codes then its AuxK entries, SAE 1's, ...
    entries: list[Entries]  # where they are, per SAE (for the encoder gradient)
    block: list[BlockMember]  # AuxK's dense block (empty: no SAE on it)
    block_vals: torch.Tensor | None  # (batch, M) the block's pre-activations


@torch.no_grad()
def select(bank: Any, x: torch.Tensor, dead: torch.Tensor | None) -> Selection:
    """Every SAE's codes and AuxK latents for the batch x (batch, d_in); ``dead`` (n, d_sae) bool
    or None. ``bank``: a TopK bank (``hypers[i].k``, ``aux_block_ratio``)."""
    ragged_ks, block = [0] * bank.n, []
    if dead is not None and bool(dead.any()):
        ragged_ks, block = split_aux(dead, aux_ks(bank, dead).tolist(), bank.aux_block_ratio)
    in_block = {m.sae: m for m in block}
    codes, aux, vals, entries, columns = [], [], [], [], []
    b_in = bank.input_bias()  # (n, d_in): b_dec, or a transcoder's fixed input centre
    for i, h in enumerate(bank.hypers):
        p = torch.addmm(bank.b_enc[i], x - b_in[i], bank.W_enc[i])  # (batch, d_sae)
        c, v = topk_entries(p, h.k)
        a, av = topk_entries(p, ragged_ks[i], None if dead is None else dead[i])
        member = in_block.get(i)
        if member is not None:
            columns.append(p[:, member.latents])  # (batch, m_i)
        codes.append(c)
        aux.append(a)
        vals += [v, av]
        entries.append(Entries(torch.cat([c.lat, a.lat]), torch.cat([c.tokens(), a.tokens()]),
                               None if member is None else member.latents))
    return Selection(codes, aux, torch.cat(vals), entries, block, torch.cat(columns, 1) if columns else None)
