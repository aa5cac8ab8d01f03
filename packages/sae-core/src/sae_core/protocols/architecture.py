"""SAE architectures. The trainer stacks SAEs of one architecture and shape into a *bank*."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch


class Architecture(ABC):
    """An SAE architecture: its hyperparameters and how to build a bank of ``n`` SAEs.

    A bank holds parameters with a leading ``n_saes`` dimension (``W_enc: (n, d_in, d_sae)``) so
    that every SAE of a sweep group runs in one batched matmul on a shared input batch.
    """

    name: ClassVar[str]
    #: dataclass of this architecture's hyperparameters (k, l1_coeff, bandwidth, ...)
    Hyper: ClassVar[type]

    @classmethod
    @abstractmethod
    def build_bank(
        cls, d_in: int, d_sae: int, hypers: list[Any], *, device: str | torch.device = "cpu"
    ) -> torch.nn.Module:
        """A module holding ``len(hypers)`` SAEs of this architecture and shape."""
