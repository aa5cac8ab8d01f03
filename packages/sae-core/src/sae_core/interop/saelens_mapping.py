"""The tensor mapping of our checkpoints onto SAELens architectures (see :mod:`sae_core.interop.saelens`).

A module of its own because :meth:`Architecture.saelens_export <sae_core.protocols.Architecture.saelens_export>`
(the architecture protocol) uses it by default, and the rest of the SAELens interop (import, which
builds an SAE) depends on the architecture protocol.
"""

from __future__ import annotations

from typing import Any

import torch

from sae_core.checkpoint.cfg import SAECheckpointConfig
from sae_core.errors import ExportError

TARGETS = ("standard", "topk", "jumprelu", "gated")
#: the SAELens cfg.json layout we write (metadata nested, SAELens >= 6). SAELens reads the version
#: from ``metadata.sae_lens_version``; without one it converts the file as a pre-6 config, which
#: drops the nested metadata (hook names: a transcoder's output hook among them), so
#: ``sae_lens.evals`` would not find the hook
SAELENS_CFG_VERSION = "6.0.0"
#: SAELens's transcoder architecture for each inference our transcoders can have (None: none exists)
TRANSCODER_TARGETS: dict[str, str | None] = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder",
                                             "topk": None, "gated": None}


def saelens_mapping(target: str, cfg: SAECheckpointConfig, tensors: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """SAELens cfg and weights of a checkpoint whose inference equals SAELens's ``target``."""
    if target not in TARGETS:
        raise ExportError(f"SAELens architecture {target!r} is not supported; supported: {', '.join(TARGETS)}")
    if cfg.is_transcoder:
        return _transcoder_mapping(target, cfg, tensors)
    need = ["W_enc", "W_dec", "b_dec", "b_enc", *{"gated": ["b_mag", "r_mag"], "jumprelu": ["threshold"]}.get(target, [])]
    missing = [k for k in need if k not in tensors]
    if missing:
        raise ExportError(f"SAE {cfg.name!r} lacks tensor(s) {', '.join(missing)} that SAELens {target!r} needs")
    weights = {k: tensors[k] for k in ("W_enc", "W_dec", "b_dec")}
    if target == "gated":
        weights.update(b_gate=tensors["b_enc"], b_mag=tensors["b_mag"], r_mag=tensors["r_mag"])
    else:
        weights["b_enc"] = tensors["b_enc"]
    if target == "jumprelu":
        weights["threshold"] = tensors["threshold"]
    sl_cfg: dict[str, Any] = {
        "architecture": target,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {  # the SAELens 6 layout: see SAELENS_CFG_VERSION
            "model_name": cfg.source.model,
            "hook_name": cfg.source.layer,
            "exported_by": "sae",
            "sae_architecture": cfg.architecture,
            "sae_lens_version": SAELENS_CFG_VERSION,
        },
    }
    if target == "topk":
        if "k" not in cfg.hyper:
            raise ExportError(f"SAE {cfg.name!r}: SAELens topk needs k, and its cfg.json hyper has none")
        sl_cfg["k"] = int(cfg.hyper["k"])
        sl_cfg["rescale_acts_by_decoder_norm"] = False
    return sl_cfg, {k: v.contiguous().float() for k, v in weights.items()}


def _transcoder_mapping(target: str, cfg: SAECheckpointConfig, tensors: dict[str, torch.Tensor]
                        ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """SAELens cfg and weights of a transcoder whose inference equals SAELens's ``target`` SAE."""
    tc = TRANSCODER_TARGETS[target]
    if tc is None:
        have = ", ".join(sorted(v for v in TRANSCODER_TARGETS.values() if v))
        raise ExportError(f"SAE {cfg.name!r} is a {cfg.architecture} transcoder, and SAELens has no {target} transcoder "
                          f"(its transcoders: {have}); train relu, jumprelu or batchtopk transcoders to export them")
    need = ["W_enc", "W_dec", "b_dec", "b_enc", *(["threshold"] if tc == "jumprelu_transcoder" else [])]
    missing = [k for k in need if k not in tensors]
    if missing:
        raise ExportError(f"SAE {cfg.name!r} lacks tensor(s) {', '.join(missing)} that SAELens {tc!r} needs")
    sl_cfg: dict[str, Any] = {
        "architecture": tc,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "d_out": cfg.width_out,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,  # a transcoder's b_dec is in the output space
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": cfg.source.model,
            "hook_name": cfg.source.layer,
            "hook_name_out": cfg.source.layer_out,
            "exported_by": "sae",
            "sae_architecture": cfg.architecture,
            "sae_lens_version": SAELENS_CFG_VERSION,
        },
    }
    return sl_cfg, {k: tensors[k].contiguous().float() for k in need}
