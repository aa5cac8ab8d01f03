"""AuxK over a dense block of dead latents: when an SAE's k_aux is a large part of its dead latents.

AuxK reconstructs the residual from each token's top-k_aux pre-activations among the dead latents
(k_aux = d_in/2 by default: 384 per token at d_in 768, against k = 32). As ragged entries
(:mod:`sae_core.archs.ragged`) that is batch · k_aux gathered rows, a CSR product and an
embedding_bag backward, all memory-bound: on a 2-core CPU (d_in 768, d_sae 6144, batch 4096, 10%
dead) AuxK tripled the step (406 -> 1240 ms). The dead latents are few, though: taking *all* of
them as a dense (batch, m) block, masked to each token's top k_aux, costs four GEMMs of
batch × m × d_in (decode, and the gradients of the block, of W_dec's rows and of W_enc's columns),
which run at the machine's GEMM rate. The block wins unless dead latents outnumber k_aux by far,
so each SAE takes the block when m ≤ ``ratio`` · k_aux (``TopKBank.aux_block_ratio``) and the
ragged entries otherwise; both give the same loss and gradients (tests/core/archs/test_arch_reference.py
runs both paths, and banks mixing them, against the paper reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BlockMember:
    """One SAE's columns [start, end) of the block: its dead latents ``latents`` (m,) and k_aux."""

    sae: int
    start: int
    end: int
    k_aux: int
    latents: torch.Tensor  # (m,) latent ids in [0, d_sae)


def split_aux(dead: torch.Tensor, k_aux: list[int], ratio: float) -> tuple[list[int], list[BlockMember]]:
    """Each SAE's path for AuxK: the k_aux of the ragged path (0 for an SAE on the block or
    without dead latents), and the block's members (empty if no SAE takes it). dead: (n, d_sae) bool."""
    counts = dead.sum(-1).tolist()  # (n,) dead latents per SAE
    ragged, members, start = list(k_aux), [], 0
    for i, (m, k) in enumerate(zip(counts, k_aux, strict=True)):
        if k == 0 or m > ratio * k:
            continue
        ragged[i] = 0
        members.append(BlockMember(i, start, start + int(m), k, dead[i].nonzero().squeeze(1)))
        start += int(m)
    return ragged, members


def block_codes(block: torch.Tensor, members: list[BlockMember]) -> torch.Tensor:
    """ReLU of each token's top-k_aux pre-activations among its SAE's columns, 0 elsewhere.
    block: (batch, M) pre-activations of the dead latents -> (batch, M)."""
    keep = torch.zeros_like(block, dtype=torch.bool)  # (batch, M)
    with torch.no_grad():
        for m in members:
            if m.k_aux >= m.end - m.start:  # k_aux covers every dead latent: nothing to choose
                keep[:, m.start : m.end] = True
            else:
                keep[:, m.start : m.end].scatter_(1, block[:, m.start : m.end].topk(m.k_aux, dim=-1).indices, True)
    return block.relu() * keep


def block_decode(codes: torch.Tensor, member: BlockMember, W_dec: torch.Tensor) -> torch.Tensor:
    """One SAE's decode of its block columns: (batch, d_out). codes: (batch, M); W_dec: that
    SAE's (d_sae, d_out)."""
    return codes[:, member.start : member.end] @ W_dec.index_select(0, member.latents)
