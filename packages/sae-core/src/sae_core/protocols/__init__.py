"""The contract of every component kind a plugin can provide; one file per protocol.

Whatever the trainer, the checkpoint loader, the analyses, the viewer or the exporters call on a
component is declared here, typed and documented (abstract where a plugin must implement it,
with a default otherwise). Names load lazily: importing the adapter protocol does not import
torch (the architecture protocol does).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    "Generation": "running", "LayerHook": "running", "ModelInputs": "running", "ModelOutput": "running",
}

__all__ = [
    "INDEX_DTYPE",
    "ActivationBatch",
    "ActivationReader",
    "ActivationSpec",
    "ActivationStore",
    "ActivationWriter",
    "AdapterRequest",
    "Analysis",
    "AnalysisContext",
    "Architecture",
    "Bank",
    "BatchComm",
    "CacheMetadata",
    "CodeChunk",
    "CodeConsumer",
    "Dataset",
    "Example",
    "Exporter",
    "Generation",
    "ImageGeometry",
    "LayerHook",
    "ModelAdapter",
    "ModelInputs",
    "ModelOutput",
    "PassAnalysis",
    "TrainContext",
    "TrainOutput",
    "Unembedding",
    "firing_stats",
]

if TYPE_CHECKING:
    from sae_core.protocols.adapter import (
        ActivationBatch,
        ActivationSpec,
        AdapterRequest,
        ModelAdapter,
        Unembedding,
    )
    from sae_core.protocols.analysis import Analysis, AnalysisContext, PassAnalysis
    from sae_core.protocols.architecture import (
        Architecture,
        Bank,
        BatchComm,
        TrainContext,
        TrainOutput,
        firing_stats,
    )
    from sae_core.protocols.codes import CodeChunk, CodeConsumer
    from sae_core.protocols.dataset import Dataset, Example
    from sae_core.protocols.exporter import Exporter
    from sae_core.protocols.geometry import ImageGeometry
    from sae_core.protocols.running import Generation, LayerHook, ModelInputs, ModelOutput
    from sae_core.protocols.store import (
        INDEX_DTYPE,
        ActivationReader,
        ActivationStore,
        ActivationWriter,
        CacheMetadata,
    )


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
