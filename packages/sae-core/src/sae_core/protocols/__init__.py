"""The contract of every component kind a plugin can provide; one file per protocol.

Whatever the trainer, the checkpoint loader, the analyses, the viewer or the exporters call on a
component is declared here, typed and documented (abstract where a plugin must implement it,
with a default otherwise). Names load lazily: importing the adapter protocol does not import
torch (the architecture protocol does).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ActivationBatch": "adapter", "ActivationSpec": "adapter", "AdapterRequest": "adapter", "ModelAdapter": "adapter",
    "Unembedding": "adapter",
    "ImageGeometry": "geometry",
    "Analysis": "analysis", "AnalysisContext": "analysis", "CodeChunk": "codes", "CodeConsumer": "codes",
    "PassAnalysis": "analysis",
    "Architecture": "architecture", "Bank": "architecture", "BatchComm": "architecture",
    "TrainContext": "architecture", "TrainOutput": "architecture", "firing_stats": "architecture",
    "Dataset": "dataset", "Example": "dataset",
    "Exporter": "exporter",
    "INDEX_DTYPE": "store", "ActivationReader": "store", "ActivationStore": "store", "ActivationWriter": "store",
    "CacheMetadata": "store",
    "BatchPlan": "batch_plan", "Mixing": "batch_plan",
    "Generation": "running", "LayerHook": "running", "ModelInputs": "running", "ModelOutput": "running",
}

__all__ = sorted(_WHERE)



def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
