"""The contract of every component kind a plugin can provide; one file per protocol.

Whatever the trainer, the checkpoint loader, the analyses, the viewer or the exporters call on a
component is declared here, typed and documented (abstract where a plugin must implement it,
with a default otherwise). Names load lazily: importing the adapter protocol does not import
torch (the architecture protocol does).
"""

from __future__ import annotations

from sae_core.lazy import lazy_names

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

__all__, __getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
