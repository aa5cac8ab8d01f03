"""PyTorch distributed plumbing for ``torchrun ... -m sae_core train|cache``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; when they say
there is more than one process, :func:`init` joins the process group (NCCL between GPUs, gloo on
CPU) and every command sees a :class:`Dist` describing its place. Without torchrun it is a world
of one and every collective is a no-op, so the same code path serves both.

Collectives on CPU objects (barriers, small control messages) go through a gloo group even when
tensors travel over NCCL: NCCL cannot carry CPU tensors, and a barrier must not need a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from sae_core.errors import SAEError

_CURRENT: Dist | None = None


@dataclass
class Dist:
    """This process's place in the job: rank ``rank`` of ``world`` (``local_rank`` on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    _cpu_group: Any = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """Each rank's device: a bare ``cuda`` becomes ``cuda:<local rank>``."""
        if self.active and requested == "cuda":
            return f"cuda:{self.local_rank}"
        return requested

    # -- collectives (identity in a world of one) ----------------------------------------------
    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier(group=self._cpu_group)

    def all_reduce_(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In-place sum (or ``"max"``) over ranks."""
        if self.active:
            red = torch.distributed.ReduceOp.SUM if op == "sum" else torch.distributed.ReduceOp.MAX
            torch.distributed.all_reduce(t, op=red)
        return t

    def all_gather_cat(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every rank's ``t`` (same shape on every rank) concatenated along ``dim`` in rank order."""
        if not self.active:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=dim)

    def broadcast_(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        if self.active:
            torch.distributed.broadcast(t, src=src)
        return t

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (a tiny CPU all-reduce over the gloo group), e.g. so
        that every rank stops at the same step after a signal reached only some of them."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=self._cpu_group)
        return bool(t.item())

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj, group=self._cpu_group)
        return out


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise SAEError("RANK / WORLD_SIZE / LOCAL_RANK must be integers; launch with torchrun") from None
    if not 0 <= rank < max(world, 1):
        raise SAEError(f"RANK={rank} is outside WORLD_SIZE={world}; launch with torchrun")
    return rank, world, local


def init(device: str = "cpu", *, timeout: timedelta | None = None) -> Dist:
    """Join torchrun's process group if there is one (idempotent); the :class:`Dist` to use.

    ``timeout`` bounds how long a collective waits for the slowest rank (torch's default is 30
    minutes; caching passes a longer one since ranks may finish their share hours apart).
    """
    global _CURRENT
    rank, world, local = env_world()
    if world <= 1:
        return Dist()
    if _CURRENT is not None and torch.distributed.is_initialized():
        return _CURRENT
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise SAEError("--device cuda under torchrun, but CUDA is not available on this node; use --device cpu")
        torch.cuda.set_device(local)
    kwargs: dict[str, Any] = {"backend": backend}
    if timeout is not None:
        kwargs["timeout"] = timeout
    torch.distributed.init_process_group(**kwargs)
    cpu_group = torch.distributed.new_group(backend="gloo", **({"timeout": timeout} if timeout else {})) \
        if backend == "nccl" else None
    _CURRENT = Dist(rank=rank, world=world, local_rank=local, backend=backend, _cpu_group=cpu_group)
    return _CURRENT


def shutdown() -> None:
    """Leave the process group (end of a command)."""
    global _CURRENT
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _CURRENT = None
