"""sae-core: plugin system, activation store, SAE architectures, multi-SAE trainer, ``sae`` CLI.

The names of the table ``_WHERE`` (and so ``__all__``) are the public API — what users, plugins,
the built-in components, the quickstart and the viewer import, and what stays stable across
versions; ``sae_core.<module>`` internals may change.
They load lazily (PEP 562), so ``import sae_core`` is cheap and imports torch only when a name
that needs it (an architecture's ``Bank``, ``load_sae``, ...) is first used::

    from sae_core import Architecture, Bank, TrainOutput, hookimpl, load_sae, open_reader
"""

from __future__ import annotations

from sae_core.lazy import lazy_names

__version__ = "0.1.0"

#: public name -> "module" that defines it, "module:attribute" where it is bound to another name
#: there, "module:" for the module itself. The one list of the public API: ``__all__`` and the lazy loader below derive from it.
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
    "BatchPlan": "sae_core.protocols.batch_plan",
    "Mixing": "sae_core.protocols.batch_plan",
    "Architecture": "sae_core.protocols.architecture",
    "Bank": "sae_core.protocols.architecture",
    "BatchComm": "sae_core.protocols.architecture",
    "TrainContext": "sae_core.protocols.architecture",
    "TrainOutput": "sae_core.protocols.architecture",
    "firing_stats": "sae_core.protocols.architecture",
    "Analysis": "sae_core.protocols.analysis",
    "AnalysisContext": "sae_core.protocols.analysis",
    "PassAnalysis": "sae_core.protocols.analysis",
    "CodeChunk": "sae_core.protocols.codes",
    "CodeConsumer": "sae_core.protocols.codes",
    "Exporter": "sae_core.protocols.exporter",
    # what an adapter exchanges when it runs its model with hooks (ModelAdapter.run_with_hooks)
    "ModelInputs": "sae_core.protocols.running",
    "ModelOutput": "sae_core.protocols.running",
    "LayerHook": "sae_core.protocols.running",
    "Generation": "sae_core.protocols.running",
    # helpers for architectures; the firing rule
    "sparse_decode": "sae_core.archs.ops",
    "mse_per_sae": "sae_core.archs.ops",
    "firing": "sae_core.firing_rule",
    "magnitude": "sae_core.firing_rule",
    # checkpoints and their layout
    "SAE": "sae_core.checkpoint.sae",
    "build_sae": "sae_core.checkpoint.sae",
    "load_sae": "sae_core.checkpoint.directory",
    "save_sae": "sae_core.checkpoint.directory",
    "find_checkpoints": "sae_core.checkpoint.discovery",
    "load_weights": "sae_core.checkpoint.weights",
    "save_weights": "sae_core.checkpoint.weights",
    "SAECheckpointConfig": "sae_core.checkpoint.cfg",
    "Normalization": "sae_core.checkpoint.cfg",
    "SourceInfo": "sae_core.checkpoint.cfg",
    "TrainInfo": "sae_core.checkpoint.cfg",
    "read_cfg": "sae_core.checkpoint.cfg",
    "CFG_FILE": "sae_core.checkpoint.filenames",
    "WEIGHTS_FILE": "sae_core.checkpoint.filenames",
    "METRICS_FILE": "sae_core.checkpoint.filenames",
    "SWEEP_FILE": "sae_core.checkpoint.filenames",
    "RUN_CONFIG_FILE": "sae_core.checkpoint.filenames",
    "filenames": "sae_core.checkpoint.filenames:",  # the module itself: every file name of checkpoints, runs and analyses
    # the main jobs
    "open_reader": "sae_core.stores",
    "open_writer": "sae_core.stores",
    "open_dataset": "sae_core.datasets",
    "cache_activations": "sae_core.caching:run_cache",
    "run_training": "sae_core.train.run",
    "expand_sweep": "sae_core.train.config:expand",
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
    "feature_summary_rows": "sae_core.analyses.summaries:summary_rows",
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
    "record_features": "sae_core.inference.features:record",
    "token_features": "sae_core.inference.features:token_table",
    "top_features": "sae_core.inference.features",
    "heatmap_overlay": "sae_core.inference.heatmap",
    "open_target": "sae_core.inference.target",
    "ablation_study": "sae_core.inference.ablation",
    "build_app": "sae_core.cli",
    "from_dict": "sae_core.dataclass_parsing",
    # helpers the built-in analyses use, for analyses a plugin writes (docs/analyses.md)
    "select_rows": "sae_core.inference.heldout",
    "last_rows_with": "sae_core.inference.heldout",
    "rows_span": "sae_core.inference.heldout",
    "HELDOUT_FRAC": "sae_core.inference.heldout:DEFAULT_FRAC",
    "shared_adapter": "sae_core.inference.loading",
    "splice_metrics": "sae_core.inference.splice_eval",
    "collect_codes": "sae_core.probing.collect:collect",
    "lambda_max": "sae_core.probing.linear",
    "predict_proba": "sae_core.probing.linear",
    "average_precision": "sae_core.probing.ranking",
    "ExampleSplit": "sae_core.validation_split",
    "band_of": "sae_core.activation_db",
    "draw_keys": "sae_core.activation_db",
    "token_string": "sae_core.tokens",
    "open_scratch": "sae_core.io",
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

_names, __getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
__all__ = ["__version__", *_names]
