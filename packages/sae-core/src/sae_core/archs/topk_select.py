"""TopK's training-time choice of latents, made SAE by SAE.

A TopK bank's forward needs, for every SAE, its top-k latents per token and, for AuxK, the top
k_aux among its dead latents (as ragged entries or as the dense block of
:mod:`sae_core.archs.dead_block`). All of it is read from the pre-activations
(x − b_dec) W_enc + b_enc, a (batch, d_sae) matrix per SAE computed without a graph (the gradient
comes back through :func:`~sae_core.archs.ragged.encoder_entries`). Each SAE's matrix is computed,
searched and dropped before the next one's (on CPU, in chunks of :data:`CPU_ROWS` tokens): a bank
never holds the (n, batch, d_sae) stack (805 MB for 8 SAEs at batch 4096, d_sae 6144), so its
peak memory is one SAE's matrix at most and its step costs what n single steps cost, with the
batch read once.
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


#: on CPU, pre-activations are made and searched this many tokens at a time: a (1024, d_sae) block
#: is still in the last-level cache when top-k reads it (d_in 768, d_sae 6144, batch 4096, 2-core
#: CPU: GEMM + top-k 268 -> 248 ms, against 229 ms for the GEMM alone; the same codes bit for bit)
CPU_ROWS = 1024


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
    step = CPU_ROWS if x.device.type == "cpu" else x.shape[0]
    for i, h in enumerate(bank.hypers):
        member, mask = in_block.get(i), None if dead is None else dead[i]
        parts = []  # per chunk of tokens: codes, their values, AuxK's, AuxK's values, block columns
        for lo in range(0, x.shape[0], step):
            p = torch.addmm(bank.b_enc[i], x[lo : lo + step] - b_in[i], bank.W_enc[i])  # (chunk, d_sae)
            parts.append((*topk_entries(p, h.k), *topk_entries(p, ragged_ks[i], mask),
                          None if member is None else p[:, member.latents]))  # block: (chunk, m_i)
        c, a = _joined([q[0] for q in parts]), _joined([q[2] for q in parts])
        codes.append(c)
        aux.append(a)
        vals += [torch.cat([q[1] for q in parts]), torch.cat([q[3] for q in parts])]
        if member is not None:
            columns.append(torch.cat([q[4] for q in parts]))  # (batch, m_i)
        entries.append(Entries(torch.cat([c.lat, a.lat]), torch.cat([c.tokens(), a.tokens()]),
                               None if member is None else member.latents))
    return Selection(codes, aux, torch.cat(vals), entries, block, torch.cat(columns, 1) if columns else None)


def _joined(chunks: list[Codes]) -> Codes:
    """The codes of consecutive chunks of tokens, as one batch."""
    return Codes(torch.cat([c.lat for c in chunks]), chunks[0].k, sum(c.batch for c in chunks))
