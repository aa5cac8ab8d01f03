"""How a sweep is spread over ``torchrun`` ranks.

Two modes, chosen with ``--parallel`` (or ``[train] parallel`` in a sweep file):

``data``  every rank holds every SAE of the group and a 1/world slice of each batch; gradients,
          firing counts and metrics are summed over ranks, so each step equals one step of a
          single process on the whole batch (batch-coupled terms go through :class:`DistBatchComm`).
``sae``   the SAEs of each group are dealt out to the ranks (largest first, to the least loaded
          rank); each rank reads a 1/world slice of the batch, the slices are all-gathered, and
          each rank trains its own SAEs on the whole batch. For sweeps too big for one GPU.

Both read the cache once in total per batch, and both give the same SAEs as a single process:
init is seeded per SAE (by its config, :func:`sae_seeds`), and batches are the same global batches.
"""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING

import torch
from torch.distributed.nn.functional import all_reduce

from sae_core.protocols.architecture import Bank, BatchComm

if TYPE_CHECKING:
    from sae_core.dist import Dist
    from sae_core.train.config import SAEConfig

MODES = ("data", "sae")


class DistBatchComm(BatchComm):
    """The rest of the batch lives on the other ranks of ``dist``."""

    def __init__(self, dist: Dist) -> None:
        self.dist = dist
        self.world = dist.world

    def mean(self, t: torch.Tensor) -> torch.Tensor:

        # autograd-aware: the backward all-reduces the incoming gradient, which (after the
        # trainer averages gradients over ranks) gives exactly d f(global mean) / d params
        return all_reduce(t) / self.world

    def gather(self, t: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return self.dist.all_gather_cat(t.detach(), dim=dim % t.dim())


def sae_seeds(seed: int, saes: list[SAEConfig]) -> dict[str, int]:
    """Init seed of every SAE (by name): a function of the run seed and of what the SAE *is*
    (architecture, size, hyperparameters, lr, data stream), never of its name, bank or rank.

    So the same SAE gets the same init whether it trains alone (``sae train --k 32``) or inside
    any sweep. SAEs whose configs are identical (repeats of one config) are told apart by their
    order among those repeats: the first gets the seed a lone run of that config would get.
    """
    out: dict[str, int] = {}
    repeats: dict[str, int] = {}
    for sae in saes:
        data = sae.data.identity()
        if data.get("mixing") == "shuffle":  # the default order: seeds as before mixing existed
            data.pop("mixing")
            data.pop("buffer_examples", None)
        ident = json.dumps({"arch": sae.arch, "d_sae": sae.d_sae, "hyper": sae.hyper, "lr": sae.lr,
                            "data": data}, sort_keys=True, default=str)
        r = repeats[ident] = repeats.get(ident, -1) + 1
        out[sae.name] = (seed * 1_000_003 + zlib.crc32(f"{ident}#{r}".encode())) % 2**62
    return out


def owners(saes: list[SAEConfig], world: int) -> list[int]:
    """Rank that trains each SAE in ``sae`` mode: largest first to the least-loaded rank.

    Cost is d_sae (the matmuls scale with it); ties go to the lowest rank, so the deal is a pure
    function of the sweep and the world size.
    """
    load = [0] * world
    owner = [0] * len(saes)
    for i in sorted(range(len(saes)), key=lambda i: (-saes[i].d_sae, i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += saes[i].d_sae
    return owner


@torch.no_grad()
def average_grads(bank: Bank, dist: Dist) -> None:
    """Mean over ranks of every parameter gradient of ``bank`` (in place, no extra copy)."""
    for p in bank.parameters():
        if p.grad is not None:
            dist.all_reduce_(p.grad).div_(dist.world)
