"""SAELens interop: its on-disk format is ``cfg.json`` + ``sae_weights.safetensors``.

Export maps our inference equations onto SAELens architectures (checked in the tests by loading
the export with the real ``sae_lens`` package and comparing encode/decode):
relu → ``standard``; topk → ``topk`` (no decoder-norm rescaling); jumprelu and batchtopk (its
inference is a JumpReLU with the learned threshold) → ``jumprelu``; gated → ``gated``;
matryoshka → the architecture of its base encoder.
Import accepts those architectures and folds SAELens-only options into the weights:
``apply_b_dec_to_input=false`` (b_enc absorbs b_dec·W_enc) and ``rescale_acts_by_decoder_norm``
(W_enc, b_enc scaled by ||W_dec_i||, W_dec rows divided by it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sae_core.errors import CheckpointError
from sae_core.io import atomic_path, atomic_write_json

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_FORMAT = "6.0.0"  # the SAELens version whose cfg.json layout export writes


def _export_arch(cfg: dict[str, Any]) -> str:
    arch = cfg["architecture"]
    if arch == "matryoshka":
        return "topk" if cfg.get("hyper", {}).get("base") == "topk" else "jumprelu"
    mapping = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu", "gated": "gated"}
    if arch not in mapping:
        raise CheckpointError(f"architecture {arch!r} has no SAELens equivalent; supported: {', '.join(mapping)}, matryoshka")
    return mapping[arch]


def export_saelens(checkpoint: str | Path, out: str | Path) -> Path:
    """Write ``checkpoint`` (ours) as a SAELens checkpoint directory ``out``."""
    from safetensors.torch import save_file

    from sae_core.checkpoint import load_weights

    checkpoint, out = Path(checkpoint), Path(out)
    try:
        cfg = json.loads((checkpoint / "cfg.json").read_text())
    except ValueError as e:
        raise CheckpointError(f"{checkpoint / 'cfg.json'} is corrupt ({e}); train or download that SAE again") from None
    tensors = load_weights(checkpoint / "sae.safetensors")
    target = _export_arch(cfg)
    weights = {k: tensors[k] for k in ("W_enc", "W_dec", "b_dec")}
    if target == "gated":
        weights.update(b_gate=tensors["b_enc"], b_mag=tensors["b_mag"], r_mag=tensors["r_mag"])
    else:
        weights["b_enc"] = tensors["b_enc"]
    if target == "jumprelu":
        weights["threshold"] = tensors["threshold"]
    source = cfg.get("source", {})
    sl_cfg: dict[str, Any] = {
        "architecture": target,
        "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"],
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        # the SAELens 6 layout (metadata nested); without a version SAELens 6 reads the file as a
        # pre-6 config and drops the metadata, so sae_lens.evals would not find the hook
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT,
            "model_name": source.get("model"),
            "hook_name": source.get("layer"),
            "exported_by": "sae",
            "sae_architecture": cfg["architecture"],
        },
    }
    if target == "topk":
        sl_cfg["k"] = int(cfg["hyper"]["k"])
        sl_cfg["rescale_acts_by_decoder_norm"] = False
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / SAELENS_WEIGHTS) as tmp:
        save_file({k: v.contiguous().float() for k, v in weights.items()}, str(tmp))
    atomic_write_json(out / SAELENS_CFG, sl_cfg)
    return out


def load_saelens(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """A SAELens checkpoint directory as our :class:`~sae_core.checkpoint.SAE`."""
    from sae_core.checkpoint import build_sae, load_weights

    path = Path(path)
    try:
        sl = json.loads((path / SAELENS_CFG).read_text())
    except ValueError as e:
        raise CheckpointError(f"{path / SAELENS_CFG} is corrupt ({e}); download that SAE again") from None
    w = {k: v.float() for k, v in load_weights(path / SAELENS_WEIGHTS).items()}
    arch = sl.get("architecture", "standard")
    if sl.get("normalize_activations", "none") not in ("none", None):
        raise CheckpointError(
            f"{path}: SAELens normalize_activations={sl['normalize_activations']!r} is not supported; "
            "export it with normalize_activations='none' (fold the scaling into the weights)"
        )
    mapping = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}
    if arch not in mapping:
        raise CheckpointError(f"{path}: SAELens architecture {arch!r} is not supported; supported: {', '.join(mapping)}")
    b_enc_key = "b_gate" if arch == "gated" else "b_enc"
    if not sl.get("apply_b_dec_to_input", True):
        shift = w["b_dec"] @ w["W_enc"]  # (d_sae,)
        w[b_enc_key] = w[b_enc_key] + shift
        if arch == "gated":
            w["b_mag"] = w["b_mag"] + shift * w["r_mag"].exp()
    if arch == "topk" and sl.get("rescale_acts_by_decoder_norm", False):
        norms = w["W_dec"].norm(dim=-1)  # (d_sae,)
        w["W_enc"] = w["W_enc"] * norms
        w["b_enc"] = w["b_enc"] * norms
        w["W_dec"] = w["W_dec"] / norms[:, None]
    tensors = {"W_enc": w["W_enc"], "b_enc": w[b_enc_key], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    if arch == "jumprelu":
        tensors["threshold"] = w["threshold"]
    if arch == "gated":
        tensors.update(r_mag=w["r_mag"], b_mag=w["b_mag"])
    hyper = {"k": int(sl["k"])} if arch == "topk" else {}
    meta = sl.get("metadata") or {}
    cfg = {
        "name": path.name,
        "architecture": mapping[arch],
        "d_in": int(sl["d_in"]),
        "d_sae": int(sl["d_sae"]),
        "hyper": hyper,
        "normalization": {"folded": True, "scale": 1.0},
        "source": {"model": meta.get("model_name"), "layer": meta.get("hook_name"), "imported_from": "saelens"},
    }
    return build_sae(cfg, tensors, device)
