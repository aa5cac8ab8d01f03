"""Validation during training: inference-mode metrics of every SAE on held-out examples.

The examples come from the data group's validation split (:mod:`sae_core.validation_split`), which the
training stream never reads. At most ``val_tokens`` of their tokens are loaded once (a fixed,
seeded sample), normalised like the training stream, and every ``eval_every`` steps each bank's
SAEs encode and decode them exactly as a saved checkpoint would: FVU, L0 (non-zero codes per
token) and the fraction of latents that fire on none of them. Transcoders: the same tokens'
target layer is loaded too, and FVU is that of the target.
"""

from __future__ import annotations

from typing import Any

import torch

from sae_core.firing_rule import firing
from sae_core.protocols.batch_plan import BatchPlan
from sae_core.train.metrics import fvu_from_sums
from sae_core.validation_split import Selection

SAMPLE_SEED = 104_729  # fixed: the same validation tokens whatever the run's seed
#: inference-mode metrics encode at most this many (token, latent) codes of a bank at once: a bank
#: of 8 SAEs of width 6144 encoding a batch of 4096 held three (8, 4096, 6144) tensors (codes,
#: their mask, the decode's input): 2.4 GB, where each SAE alone held 300 MB
MAX_CODES = 2**25


def chunk_rows(bank: Any, rows: int) -> int:
    """Tokens per chunk for ``bank``'s dense inference codes: at most ``rows`` and :data:`MAX_CODES`
    codes over all its SAEs (at least one token)."""
    return max(1, min(rows, MAX_CODES // (bank.n * bank.d_sae)))


def inference_sums(bank: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a saved checkpoint of ``bank`` does on x (tokens, d_in) against y (what it
    reconstructs: x itself, or a transcoder's target), encoded :func:`chunk_rows` tokens at a
    time: the SSE (n,) and Σ over tokens of L0 (n,), float64, and whether each latent fired on
    any token (n, d_sae)."""
    sse = torch.zeros(bank.n, dtype=torch.float64, device=x.device)
    l0 = torch.zeros_like(sse)
    fired = torch.zeros(bank.n, bank.d_sae, dtype=torch.bool, device=x.device)
    step = chunk_rows(bank, x.shape[0])
    for lo in range(0, x.shape[0], step):
        f = bank.encode(x[lo : lo + step])  # (n_saes, chunk, d_sae)
        active = firing(f)
        sse += (bank.decode(f).float() - y[lo : lo + step]).pow(2).sum((-1, -2)).double()
        l0 += active.sum((-1, -2)).double()
        fired |= active.any(1)
    return sse, l0, fired


class Validation:
    """The validation tokens of one data group (possibly none)."""

    def __init__(self, reader: Any, *, layer: int, tokens: str, select: Selection | None, max_tokens: int,
                 batch_size: int, device: torch.device, layer_out: int | None = None) -> None:
        self.x = torch.empty(0, reader.meta.d_model)
        self.y: torch.Tensor | None = None  # transcoders: the target of the same tokens (raw)
        self.batch_size = batch_size
        if select is None:
            return
        n_val = reader.n_tokens(tokens, select=select)
        if n_val == 0:
            return
        parts, have = [], 0
        layers = [layer] if layer_out is None else [layer, layer_out]
        for b in reader.batches(BatchPlan(min(batch_size, n_val), layers=layers, tokens=tokens, seed=SAMPLE_SEED,
                                          select=select, drop_last=False)):
            parts.append(b)
            have += b.shape[0]
            if have >= max_tokens:
                break
        both = torch.cat(parts)[:max_tokens].to(device)  # (n_val, layers, d), raw
        self.x = both[:, 0]  # (n_val, d_in)
        if layer_out is not None:
            self.y = both[:, 1]  # (n_val, d_out)
        self.scale = 1.0

    @property
    def n_tokens(self) -> int:
        return int(self.x.shape[0])

    @torch.no_grad()
    def metrics(self, bank: Any, scale: float, scale_out: float | None = None) -> dict[str, torch.Tensor]:
        """``val_fvu``, ``val_l0``, ``val_dead_frac``: (n,) each, for bank's SAEs (``scale_out``:
        the target's scale, for transcoders)."""
        n = self.n_tokens
        sse = torch.zeros(bank.n, dtype=torch.float64, device=self.x.device)
        l0 = torch.zeros_like(sse)
        fired = torch.zeros(bank.n, bank.d_sae, dtype=torch.bool, device=self.x.device)
        target, t_scale = (self.x, scale) if self.y is None else (self.y, scale if scale_out is None else scale_out)
        xs = target.double() * t_scale
        for lo in range(0, n, self.batch_size):  # normalised a batch at a time, encoded in chunks
            x = (self.x[lo : lo + self.batch_size] * scale).float()  # (b, d_in)
            y = x if self.y is None else (self.y[lo : lo + self.batch_size] * t_scale).float()  # what is reconstructed
            batch_sse, batch_l0, batch_fired = inference_sums(bank, x, y)
            sse += batch_sse
            l0 += batch_l0
            fired |= batch_fired
        fvu = fvu_from_sums(sse, xs.sum(0), xs.pow(2).sum(), n)
        return {"val_fvu": fvu, "val_l0": l0 / n, "val_dead_frac": (~fired).double().mean(-1)}
