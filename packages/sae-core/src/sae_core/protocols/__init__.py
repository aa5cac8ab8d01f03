"""The small typed classes that plugins implement; one file per protocol."""

from sae_core.protocols.adapter import ActivationBatch, ActivationSpec, AdapterRequest, ModelAdapter
from sae_core.protocols.analysis import Analysis, AnalysisContext
from sae_core.protocols.architecture import Architecture
from sae_core.protocols.dataset import Dataset, Example
from sae_core.protocols.store import (
    INDEX_DTYPE,
    ActivationReader,
    ActivationStore,
    ActivationWriter,
    CacheMetadata,
)

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
    "CacheMetadata",
    "Dataset",
    "Example",
    "ModelAdapter",
]
