"""Edits of SAE features: ablate, clamp, scale, or add a feature (steering).

Every edit acts on the latents ``f`` (tokens, d_sae) of the selected tokens. The decoder is
linear, so adding ``s`` to latent ``i`` adds ``s × W_dec[i]`` to the reconstruction: steering is
the edit ``Steer(i, s)``, and with the error term kept the model's activation moves by exactly
that vector. Feature ids are checked against the SAE's size before any model runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from sae_core.errors import SAEError


def _ids(features: int | Iterable[int]) -> tuple[int, ...]:
    return (int(features),) if isinstance(features, int) else tuple(int(i) for i in features)


@dataclass(frozen=True)
class Edit:
    """Base class: ``features`` are latent indices; :meth:`apply` edits f in place."""

    features: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", _ids(self.features))
        if not self.features:
            raise SAEError(f"{type(self).__name__} needs at least one feature id")

    def apply(self, f: torch.Tensor) -> None:
        """Edit latents ``f`` (tokens, d_sae) in place."""
        raise NotImplementedError

    def check(self, d_sae: int) -> None:
        bad = [i for i in self.features if not 0 <= i < d_sae]
        if bad:
            raise SAEError(f"feature id(s) {bad} out of range: the SAE has {d_sae} features (0..{d_sae - 1})")


@dataclass(frozen=True)
class Ablate(Edit):
    """Set the features to 0 (the SAE's ablation study)."""

    def apply(self, f: torch.Tensor) -> None:
        f[:, list(self.features)] = 0


@dataclass(frozen=True)
class Clamp(Edit):
    """Set the features to ``value`` on every selected token (fired or not)."""

    value: float = 0.0

    def apply(self, f: torch.Tensor) -> None:
        f[:, list(self.features)] = float(self.value)


@dataclass(frozen=True)
class Scale(Edit):
    """Multiply the features by ``factor``."""

    factor: float = 1.0

    def apply(self, f: torch.Tensor) -> None:
        f[:, list(self.features)] *= float(self.factor)


@dataclass(frozen=True)
class Steer(Edit):
    """Add ``strength`` to the features: the activation moves by ``strength × W_dec[i]``."""

    strength: float = 1.0

    def apply(self, f: torch.Tensor) -> None:
        f[:, list(self.features)] += float(self.strength)


def edited_features(edits: Sequence[Edit]) -> list[int]:
    """The latents any of ``edits`` touches, sorted (the only columns whose change matters)."""
    return sorted({i for e in edits for i in e.features})
