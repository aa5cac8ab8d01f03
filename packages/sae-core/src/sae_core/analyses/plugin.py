"""Registers the built-in analyses."""

from __future__ import annotations

from typing import Any

from sae_core.hookspecs import hookimpl


@hookimpl
def register_analyses(register: Any) -> None:
    from sae_core.analyses.activation_db import ActivationDBAnalysis  # lazy: loads torch, numpy
    from sae_core.analyses.cooccurrence import CooccurrenceAnalysis  # lazy: loads torch, numpy
    from sae_core.analyses.downstream import Downstream  # lazy: loads torch, numpy
    from sae_core.analyses.feature_stats import FeatureStats  # lazy: loads torch, numpy
    from sae_core.analyses.logit_effects import LogitEffects  # lazy: loads torch, numpy
    from sae_core.analyses.neighbours import DecoderNeighbours  # lazy: loads torch, numpy
    from sae_core.analyses.probe import Probe  # lazy: loads torch, numpy
    from sae_core.analyses.quantile_examples import QuantileExamples  # lazy: loads torch, numpy
    from sae_core.analyses.reconstruction import Reconstruction  # lazy: loads torch, numpy
    from sae_core.analyses.summaries import FeatureSummaries  # lazy: loads torch, numpy
    from sae_core.analyses.top_examples import TopExamples  # lazy: loads torch, numpy

    # feature-summaries last: it joins the per-latent files the others write
    for cls in (FeatureStats, TopExamples, ActivationDBAnalysis, QuantileExamples, Reconstruction, Downstream,
                DecoderNeighbours, CooccurrenceAnalysis, LogitEffects, FeatureSummaries):
        register(cls.name, cls, description=(cls.__doc__ or "").strip())
    register(Probe.name, Probe, description=(Probe.__doc__ or "").strip(), default=False)  # needs labels
