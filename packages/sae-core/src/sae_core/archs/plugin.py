"""Registers the built-in SAE architectures (one module each)."""

from __future__ import annotations

from typing import Any

from sae_core.hookspecs import hookimpl


@hookimpl
def register_architectures(register: Any) -> None:
    from sae_core.archs.batchtopk import BatchTopK
    from sae_core.archs.gated import Gated
    from sae_core.archs.jumprelu import JumpReLU
    from sae_core.archs.matryoshka import Matryoshka
    from sae_core.archs.relu import ReLU
    from sae_core.archs.topk import TopK

    for arch in (ReLU, TopK, BatchTopK, JumpReLU, Gated, Matryoshka):
        register(arch.name, arch, description=(arch.__doc__ or "").strip())
