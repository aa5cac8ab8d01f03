"""One optimizer step of one bank: the unit the trainer repeats and the tests check.

Kept apart from the training loop so the tests can drive exactly the code the trainer runs
(forward, backward, decoder-gradient projection, Adam, constraints) against references written
from the papers, one step at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from sae_core.protocols.architecture import Bank, TrainContext, TrainOutput
from sae_core.train.optim import BankAdam


def bank_step(
    bank: Bank, opt: BankAdam, x: torch.Tensor, ctx: TrainContext, lr: torch.Tensor, *,
    autocast: Any = None, reduce_grads: Callable[[Bank], None] | None = None,
) -> TrainOutput:
    """Train ``bank`` on ``x`` (batch, d_in) for one step with per-SAE learning rates ``lr`` (n,).

    Each SAE's loss is back-propagated as part of their sum (SAEs share no parameters, so each
    gets exactly its own gradient); ``reduce_grads`` averages gradients over data-parallel ranks.
    """
    with autocast if autocast is not None else contextlib.nullcontext():
        out = bank.train_forward(x, ctx)
    for p in bank.parameters():
        p.grad = None
    out.loss.sum().backward()
    if reduce_grads is not None:
        reduce_grads(bank)
    bank.project_decoder_grad()
    opt.step(lr)
    bank.post_step()
    return out
