"""Recorded feature activations: which features fire on which token, stored sparse."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_core.firing_rule import magnitude


@dataclass
class FeatureActs:
    """Feature activations of one SAE on the tokens it reads in one run (before any edit).

    A feature fires where its code is non-zero (:func:`sae_core.firing_rule.firing`; codes may be
    negative for architectures with signed codes). Only selected tokens are recorded (valid, of the SAE's token kind: never padding, and
    BOS/CLS/SEP only if the cache kept them), in (row, position) order.
    """

    layer: str
    rows: torch.Tensor  # (M,) int64: batch row of each recorded token
    positions: torch.Tensor  # (M,) int64: its position in the row
    acts: torch.Tensor  # (M, d_sae) sparse COO: the SAE's encode() of the token's activation

    @property
    def d_sae(self) -> int:
        return int(self.acts.shape[1])

    def dense(self) -> torch.Tensor:
        """(M, d_sae) dense latents."""
        return self.acts.to_dense()

    def top(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's ``n`` strongest latents: values (M, n) and feature ids (M, n), by
        decreasing magnitude (:func:`sae_core.firing_rule.magnitude`: signed codes rank by |code| and
        keep their sign); inactive slots (fewer than ``n`` features fired) have value 0."""
        dense = self.dense()
        n = min(n, self.d_sae)
        if not len(dense):
            return dense[:, :n], dense[:, :n].long()
        ids = torch.topk(magnitude(dense), n, dim=-1).indices  # (M, n)
        return dense.gather(-1, ids), ids

    def grid(self, batch: int, tokens: int) -> torch.Tensor:
        """(batch, tokens, d_sae) dense latents, zero where nothing was recorded."""
        out = torch.zeros(batch, tokens, self.d_sae)
        out[self.rows, self.positions] = self.dense().float().cpu()
        return out
