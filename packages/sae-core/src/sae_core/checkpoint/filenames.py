"""The file names of SAE checkpoints, training runs and analyses: the on-disk layout.

This module is the one owner of that layout. Every reader and writer (trainer, loader,
analyses, exporters, Hub, viewer) takes file names and ``cfg.json`` fields from here, so a
change of format is made once, and a third-party tool can read our checkpoints by importing
:class:`~sae_core.checkpoint.cfg.SAECheckpointConfig` instead of guessing keys. It imports nothing heavy (no torch), so
the viewer and ``sae info`` can use it.

A checkpoint directory::

    cfg.json            SAECheckpointConfig (what the SAE is, where its data came from, metrics)
    sae.safetensors     W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],
                        plus the architecture's extra tensors (threshold, r_mag, ...); a
                        transcoder's W_dec and b_dec are [d_sae, d_out] and [d_out]
    metrics.jsonl       one JSON line per log step of training
    feature_stats.*, top_examples.*, quantile_examples.*, reconstruction.json, downstream.json,
    neighbours.safetensors, cooccurrence.*, logit_effects.*, feature_summaries.jsonl, probe.*
    activations/        (the feature activation database)                  (``sae analyze``)
    ablation.json       ablation studies (``sae ablate``)
    probe.json, probe.safetensors   how well latents predict labels (``sae probe``)

A run directory holds one checkpoint directory per SAE, ``config.json`` (the TrainConfig, with
the cache recorded by path and fingerprint), ``sweep.json`` (final metrics of every SAE) and
``state/`` (resumable training state).
"""

from __future__ import annotations

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
METRICS_FILE = "metrics.jsonl"
RUN_CONFIG_FILE = "config.json"
SWEEP_FILE = "sweep.json"
STATE_DIR = "state"

#: results of the built-in analyses, written beside the checkpoint and read by the viewer
FEATURE_STATS_FILE = "feature_stats.safetensors"
FEATURE_STATS_SUMMARY_FILE = "feature_stats.json"
TOP_EXAMPLES_FILE = "top_examples.safetensors"
TOP_EXAMPLES_META_FILE = "top_examples.json"
RECONSTRUCTION_FILE = "reconstruction.json"
DOWNSTREAM_FILE = "downstream.json"
NEIGHBOURS_FILE = "neighbours.safetensors"
COOCCURRENCE_FILE = "cooccurrence.safetensors"
COOCCURRENCE_META_FILE = "cooccurrence.json"
LOGIT_EFFECTS_FILE = "logit_effects.safetensors"
LOGIT_EFFECTS_META_FILE = "logit_effects.json"
FEATURE_SUMMARIES_FILE = "feature_summaries.jsonl"
#: results of ``sae probe`` / the ``probe`` analysis (per label: latents ranked by AP, the linear probe)
PROBE_FILE = "probe.safetensors"
PROBE_META_FILE = "probe.json"
QUANTILE_EXAMPLES_FILE = "quantile_examples.safetensors"
QUANTILE_EXAMPLES_META_FILE = "quantile_examples.json"
#: the feature activation database (``sae analyze``, ``sae query``): a directory of .npy shards
#: whose ``manifest.json`` is written last (no manifest: not a complete database)
ACTIVATION_DB_DIR = "activations"
ACTIVATION_DB_MANIFEST = "manifest.json"
#: results of ``sae ablate`` (merged per feature set), written beside the checkpoint
ABLATION_FILE = "ablation.json"

#: token id -> piece, written into a text cache's directory by text adapters (``write_extras``)
VOCAB_FILE = "vocab.json"

#: SAELens's checkpoint layout (``cfg.json`` + this), recognised by :func:`sae_core.checkpoint.load_sae`
SAELENS_WEIGHTS_FILE = "sae_weights.safetensors"

FORMAT = "sae"
FORMAT_VERSION = 1
