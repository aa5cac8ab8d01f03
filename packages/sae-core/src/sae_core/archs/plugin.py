"""Registers the built-in SAE architectures (one module each)."""

from __future__ import annotations

from typing import Any

from sae_core.hookspecs import hookimpl


@hookimpl
def register_architectures(register: Any) -> None:
    from sae_core.archs.batchtopk import BatchTopK  # lazy: loads torch, numpy
    from sae_core.archs.gated import Gated  # lazy: loads torch, numpy
    from sae_core.archs.jumprelu import JumpReLU  # lazy: loads torch, numpy
    from sae_core.archs.matryoshka import Matryoshka  # lazy: loads torch, numpy
    from sae_core.archs.relu import ReLU  # lazy: loads torch, numpy
    from sae_core.archs.topk import TopK  # lazy: loads torch, numpy

    for arch in (ReLU, TopK, BatchTopK, JumpReLU, Gated, Matryoshka):
        register(arch.name, arch, description=(arch.__doc__ or "").strip())
