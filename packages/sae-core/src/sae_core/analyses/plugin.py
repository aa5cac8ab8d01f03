"""Registers the built-in analyses."""

from __future__ import annotations

from typing import Any

from sae_core.hookspecs import hookimpl


@hookimpl
def register_analyses(register: Any) -> None:
    from sae_core.analyses.activation_db import ActivationDBAnalysis
    from sae_core.analyses.downstream import Downstream
    from sae_core.analyses.feature_stats import FeatureStats
    from sae_core.analyses.quantile_examples import QuantileExamples
    from sae_core.analyses.reconstruction import Reconstruction
    from sae_core.analyses.top_examples import TopExamples

    for cls in (FeatureStats, TopExamples, ActivationDBAnalysis, QuantileExamples, Reconstruction, Downstream):
        register(cls.name, cls, description=(cls.__doc__ or "").strip())
