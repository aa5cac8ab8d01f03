"""sae-core: plugin system, activation store, SAE architectures, multi-SAE trainer, ``sae`` CLI.

The names in ``__all__`` are the public API — what users, plugins, the quickstart and the viewer
import, and what stays stable across versions; ``sae_core.<module>`` internals may change.
They load lazily (PEP 562), so ``import sae_core`` is cheap and imports torch only when a name
that needs it (an architecture's ``Bank``, ``load_sae``, ...) is first used::

    from sae_core import Architecture, Bank, TrainOutput, hookimpl, load_sae, open_reader
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_WHERE: dict[str, str] = {
    # plugins
    "hookimpl": "sae_core.hookspecs",
    "Register": "sae_core.hookspecs",
    "get_registry": "sae_core.plugins",
    "get_component": "sae_core.plugins",
    # errors
    "SAEError": "sae_core.errors",
    "ConfigError": "sae_core.errors",
    "DataError": "sae_core.errors",
    "StoreError": "sae_core.errors",
    "CheckpointError": "sae_core.errors",
    "ExportError": "sae_core.errors",
    "PluginError": "sae_core.errors",
    "UnknownComponentError": "sae_core.errors",
    # protocols: what a plugin implements
    "ModelAdapter": "sae_core.protocols.adapter",
    "Unembedding": "sae_core.protocols.adapter",
    "AdapterRequest": "sae_core.protocols.adapter",
    "ActivationSpec": "sae_core.protocols.adapter",
    "ActivationBatch": "sae_core.protocols.adapter",
    "ImageGeometry": "sae_core.protocols.geometry",
    "Dataset": "sae_core.protocols.dataset",
    "Example": "sae_core.protocols.dataset",
    "ActivationStore": "sae_core.protocols.store",
    "ActivationReader": "sae_core.protocols.store",
    "ActivationWriter": "sae_core.protocols.store",
    "CacheMetadata": "sae_core.protocols.store",
    "INDEX_DTYPE": "sae_core.protocols.store",
    "Architecture": "sae_core.protocols.architecture",
    "Bank": "sae_core.protocols.architecture",
    "BatchComm": "sae_core.protocols.architecture",
    "TrainContext": "sae_core.protocols.architecture",
    "TrainOutput": "sae_core.protocols.architecture",
    "firing_stats": "sae_core.protocols.architecture",
    "Analysis": "sae_core.protocols.analysis",
    "AnalysisContext": "sae_core.protocols.analysis",
    "PassAnalysis": "sae_core.protocols.analysis",
    "CodeChunk": "sae_core.protocols.analysis",
    "CodeConsumer": "sae_core.protocols.analysis",
    "Exporter": "sae_core.protocols.exporter",
    # what an adapter exchanges when it runs its model with hooks (ModelAdapter.run_with_hooks)
    "ModelInputs": "sae_core.protocols.running",
    "ModelOutput": "sae_core.protocols.running",
    "LayerHook": "sae_core.protocols.running",
    "Generation": "sae_core.protocols.running",
    # helpers for architectures; the firing rule
    "sparse_decode": "sae_core.archs.base",
    "mse_per_sae": "sae_core.archs.base",
    "firing": "sae_core.codes",
    "magnitude": "sae_core.codes",
    # checkpoints and their layout
    "SAE": "sae_core.sae_module",
    "build_sae": "sae_core.sae_module",
    "load_sae": "sae_core.checkpoint",
    "save_sae": "sae_core.checkpoint",
    "find_checkpoints": "sae_core.layout",
    "load_weights": "sae_core.weights",
    "save_weights": "sae_core.weights",
    "SAECheckpointConfig": "sae_core.layout",
    "Normalization": "sae_core.layout",
    "SourceInfo": "sae_core.layout",
    "TrainInfo": "sae_core.layout",
    "read_cfg": "sae_core.layout",
    "CFG_FILE": "sae_core.layout",
    "WEIGHTS_FILE": "sae_core.layout",
    "METRICS_FILE": "sae_core.layout",
    "SWEEP_FILE": "sae_core.layout",
    "RUN_CONFIG_FILE": "sae_core.layout",
    "layout": "sae_core.layout",  # the module: every file name of checkpoints, runs and analyses
    # the main jobs
    "open_reader": "sae_core.stores",
    "open_writer": "sae_core.stores",
    "open_dataset": "sae_core.datasets",
    "cache_activations": "sae_core.caching",
    "run_training": "sae_core.train.trainer",
    "expand_sweep": "sae_core.train.config",
    "load_sweep": "sae_core.train.config",
    "TrainConfig": "sae_core.train.config",
    "SAEConfig": "sae_core.train.config",
    "DataConfig": "sae_core.train.config",
    "TrainSettings": "sae_core.train.config",
    "analyse_run": "sae_core.analyses.runner",
    # per-latent analyses usable outside `sae analyze` (docs/analyses.md)
    "Cooccurrence": "sae_core.analyses.cooccurrence",
    "decoder_neighbours": "sae_core.analyses.neighbours",
    "logit_effects": "sae_core.analyses.logit_effects",
    "folded_unembedding": "sae_core.analyses.logit_effects",
    "feature_summary_rows": "sae_core.analyses.summaries",
    # token strings of a text cache (vocab.json), as the viewer shows them
    "load_vocab": "sae_core.tokens",
    "detokenize": "sae_core.tokens",
    # probing: labels, each latent as a classifier, the sparse linear probe (docs/analyses.md)
    "load_labels": "sae_core.probing.labels",
    "latent_metrics": "sae_core.probing.ranking",
    "fit_l1_logistic": "sae_core.probing.linear",
    "run_shared_pass": "sae_core.analyses.shared_pass",
    "sparse_consumer": "sae_core.analyses.shared_pass",
    # the feature activation database (docs/analyses.md)
    "open_activation_db": "sae_core.activation_db",
    "ActivationDB": "sae_core.activation_db",
    "Hits": "sae_core.activation_db",
    "Band": "sae_core.activation_db",
    "Firings": "sae_core.activation_db",
    "export_checkpoints": "sae_core.interop.export",
    # other libraries' checkpoints (docs/interop.md)
    "import_checkpoints": "sae_core.interop.importer",
    "checkpoint_format": "sae_core.interop.detect",
    "read_any": "sae_core.interop.readers",
    # using SAEs inside their model (docs/using-saes.md)
    "HookedModel": "sae_core.inference.model",
    "RunResult": "sae_core.inference.model",
    "SAEHook": "sae_core.inference.hook",
    "FeatureActs": "sae_core.inference.records",
    "Edit": "sae_core.inference.edits",
    "Ablate": "sae_core.inference.edits",
    "Clamp": "sae_core.inference.edits",
    "Scale": "sae_core.inference.edits",
    "Steer": "sae_core.inference.edits",
    "record_features": "sae_core.inference.features",
    "token_features": "sae_core.inference.features",
    "top_features": "sae_core.inference.features",
    "heatmap_overlay": "sae_core.inference.heatmap",
    "open_target": "sae_core.inference.target",
    "ablation_study": "sae_core.inference.ablation",
    "build_app": "sae_core.cli",
    "from_dict": "sae_core.config",
    # durable writes (temporary name, fsync, rename, fsync of the directory)
    "atomic_write_bytes": "sae_core.io",
    "atomic_write_text": "sae_core.io",
    "atomic_write_json": "sae_core.io",
    "atomic_path": "sae_core.io",
    "atomic_open": "sae_core.io",
    "staged_dir": "sae_core.io",
    "append_line": "sae_core.io",
    "fsync_dir": "sae_core.io",
}

#: public names bound to another name in their module
_ALIASES = {"feature_summary_rows": "summary_rows", "cache_activations": "run_cache", "expand_sweep": "expand", "record_features": "record",
            "token_features": "token_table"}

__all__ = [
    "CFG_FILE",
    "INDEX_DTYPE",
    "METRICS_FILE",
    "RUN_CONFIG_FILE",
    "SAE",
    "SWEEP_FILE",
    "WEIGHTS_FILE",
    "Ablate",
    "ActivationBatch",
    "ActivationDB",
    "ActivationReader",
    "ActivationSpec",
    "ActivationStore",
    "ActivationWriter",
    "AdapterRequest",
    "Analysis",
    "AnalysisContext",
    "Architecture",
    "Band",
    "Bank",
    "BatchComm",
    "CacheMetadata",
    "CheckpointError",
    "Clamp",
    "CodeChunk",
    "CodeConsumer",
    "ConfigError",
    "Cooccurrence",
    "DataConfig",
    "DataError",
    "Dataset",
    "Edit",
    "Example",
    "ExportError",
    "Exporter",
    "FeatureActs",
    "Firings",
    "Generation",
    "Hits",
    "HookedModel",
    "ImageGeometry",
    "LayerHook",
    "ModelAdapter",
    "ModelInputs",
    "ModelOutput",
    "Normalization",
    "PassAnalysis",
    "PluginError",
    "Register",
    "RunResult",
    "SAECheckpointConfig",
    "SAEConfig",
    "SAEError",
    "SAEHook",
    "Scale",
    "SourceInfo",
    "Steer",
    "StoreError",
    "TrainConfig",
    "TrainContext",
    "TrainInfo",
    "TrainOutput",
    "TrainSettings",
    "Unembedding",
    "UnknownComponentError",
    "__version__",
    "ablation_study",
    "analyse_run",
    "append_line",
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "build_app",
    "build_sae",
    "cache_activations",
    "checkpoint_format",
    "decoder_neighbours",
    "detokenize",
    "expand_sweep",
    "export_checkpoints",
    "feature_summary_rows",
    "find_checkpoints",
    "firing",
    "firing_stats",
    "fit_l1_logistic",
    "folded_unembedding",
    "from_dict",
    "fsync_dir",
    "get_component",
    "get_registry",
    "heatmap_overlay",
    "hookimpl",
    "import_checkpoints",
    "latent_metrics",
    "layout",
    "load_labels",
    "load_sae",
    "load_sweep",
    "load_vocab",
    "load_weights",
    "logit_effects",
    "magnitude",
    "mse_per_sae",
    "open_activation_db",
    "open_dataset",
    "open_reader",
    "open_target",
    "open_writer",
    "read_any",
    "read_cfg",
    "record_features",
    "run_shared_pass",
    "run_training",
    "save_sae",
    "save_weights",
    "sparse_consumer",
    "sparse_decode",
    "staged_dir",
    "token_features",
    "top_features",
]

if TYPE_CHECKING:
    from sae_core import layout
    from sae_core.activation_db import ActivationDB, Band, Firings, Hits, open_activation_db
    from sae_core.analyses.cooccurrence import Cooccurrence
    from sae_core.analyses.logit_effects import folded_unembedding, logit_effects
    from sae_core.analyses.neighbours import decoder_neighbours
    from sae_core.analyses.runner import analyse_run
    from sae_core.analyses.shared_pass import run_shared_pass, sparse_consumer
    from sae_core.analyses.summaries import summary_rows as feature_summary_rows
    from sae_core.archs.base import mse_per_sae, sparse_decode
    from sae_core.caching import run_cache as cache_activations
    from sae_core.checkpoint import load_sae, save_sae
    from sae_core.cli import build_app
    from sae_core.codes import firing, magnitude
    from sae_core.config import from_dict
    from sae_core.datasets import open_dataset
    from sae_core.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        ExportError,
        PluginError,
        SAEError,
        StoreError,
        UnknownComponentError,
    )
    from sae_core.hookspecs import Register, hookimpl
    from sae_core.inference.ablation import ablation_study
    from sae_core.inference.edits import Ablate, Clamp, Edit, Scale, Steer
    from sae_core.inference.features import record as record_features
    from sae_core.inference.features import token_table as token_features
    from sae_core.inference.features import top_features
    from sae_core.inference.heatmap import heatmap_overlay
    from sae_core.inference.hook import SAEHook
    from sae_core.inference.model import HookedModel, RunResult
    from sae_core.inference.records import FeatureActs
    from sae_core.inference.target import open_target
    from sae_core.interop.detect import checkpoint_format
    from sae_core.interop.export import export_checkpoints
    from sae_core.interop.importer import import_checkpoints
    from sae_core.interop.readers import read_any
    from sae_core.io import (
        append_line,
        atomic_open,
        atomic_path,
        atomic_write_bytes,
        atomic_write_json,
        atomic_write_text,
        fsync_dir,
        staged_dir,
    )
    from sae_core.layout import (
        CFG_FILE,
        METRICS_FILE,
        RUN_CONFIG_FILE,
        SWEEP_FILE,
        WEIGHTS_FILE,
        Normalization,
        SAECheckpointConfig,
        SourceInfo,
        TrainInfo,
        find_checkpoints,
        read_cfg,
    )
    from sae_core.plugins import get_component, get_registry
    from sae_core.probing.labels import load_labels
    from sae_core.probing.linear import fit_l1_logistic
    from sae_core.probing.ranking import latent_metrics
    from sae_core.protocols import (
        INDEX_DTYPE,
        ActivationBatch,
        ActivationReader,
        ActivationSpec,
        ActivationStore,
        ActivationWriter,
        AdapterRequest,
        Analysis,
        AnalysisContext,
        Architecture,
        Bank,
        BatchComm,
        CacheMetadata,
        CodeChunk,
        CodeConsumer,
        Dataset,
        Example,
        Exporter,
        Generation,
        ImageGeometry,
        LayerHook,
        ModelAdapter,
        ModelInputs,
        ModelOutput,
        PassAnalysis,
        TrainContext,
        TrainOutput,
        Unembedding,
        firing_stats,
    )
    from sae_core.sae_module import SAE, build_sae
    from sae_core.stores import open_reader, open_writer
    from sae_core.tokens import detokenize, load_vocab
    from sae_core.train.config import (
        DataConfig,
        SAEConfig,
        TrainConfig,
        TrainSettings,
        load_sweep,
    )
    from sae_core.train.config import expand as expand_sweep
    from sae_core.train.trainer import run_training
    from sae_core.weights import load_weights, save_weights


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sae_core' has no attribute {name!r}")
    imported = importlib.import_module(module)
    value = imported if module == f"sae_core.{name}" else getattr(imported, _ALIASES.get(name, name))
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
