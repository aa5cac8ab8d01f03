"""SAELens interop: its on-disk format is ``cfg.json`` + ``sae_weights.safetensors``.

Export maps our inference equations onto SAELens architectures (checked in the tests by loading
the export with the real ``sae_lens`` package and comparing encode/decode). Each architecture
says which SAELens architecture it equals (``Architecture.saelens_architecture``, or its own
``saelens_export``): relu → ``standard``; topk → ``topk`` (no decoder-norm rescaling); jumprelu
and batchtopk (its inference is a JumpReLU with the learned threshold) → ``jumprelu``; gated →
``gated``; matryoshka → the architecture of its base encoder. :func:`~sae_core.interop.saelens_mapping.saelens_mapping` holds the
tensor mapping of each target.

Import accepts those architectures and folds SAELens-only options into the weights:
``apply_b_dec_to_input=false`` (b_enc absorbs b_dec·W_enc) and ``rescale_acts_by_decoder_norm``
(W_enc, b_enc scaled by ||W_dec_i||, W_dec rows divided by it).

Transcoders map onto SAELens's transcoder classes, whose equations are ours (the input is not
centred, ``apply_b_dec_to_input=false``; ``W_dec``/``b_dec`` have width ``d_out``; the output
hook is ``metadata.hook_name_out``): a ReLU inference (relu) → ``transcoder``, a JumpReLU one
(jumprelu, batchtopk, matryoshka over batchtopk) → ``jumprelu_transcoder``. SAELens (6.x) has
no TopK or Gated transcoder, so those are refused with the reason. Import reads both back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from sae_core import (
    CFG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    Exporter,
    SAECheckpointConfig,
    SourceInfo,
    atomic_write_json,
    build_sae,
    filenames,
    load_weights,
    read_cfg,
    save_weights,
)
from sae_core.interop.detect import read_peer_json


def _convert(checkpoint: Path, cfg: SAECheckpointConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from sae_core import get_component  # lazy: loads pluggy

    arch = get_component("architecture", cfg.architecture).factory
    return arch.saelens_export(cfg, load_weights(checkpoint / WEIGHTS_FILE))


class SAELensExporter(Exporter):
    """SAELens's format (``SAE.load_from_disk(DIR)``), mapped by each architecture."""

    name: ClassVar[str] = "saelens"

    def check(self, checkpoint: Path, cfg: SAECheckpointConfig) -> None:
        _convert(checkpoint, cfg)  # the mapping itself: it raises what would fail in write

    def write(self, checkpoint: Path, cfg: SAECheckpointConfig, out: Path) -> None:
        sl_cfg, weights = _convert(checkpoint, cfg)
        save_weights(out / filenames.SAELENS_WEIGHTS_FILE, weights)
        atomic_write_json(out / CFG_FILE, sl_cfg)


def export_saelens(checkpoint: str | Path, out: str | Path) -> Path:
    """Write ``checkpoint`` (ours) as a SAELens checkpoint directory ``out``."""
    checkpoint, out = Path(checkpoint), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    SAELensExporter().write(checkpoint, read_cfg(checkpoint), out)
    return out


def load_saelens(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """A SAELens checkpoint directory as our :class:`~sae_core.checkpoint.sae.SAE`."""

    return build_sae(*read_saelens(path), device)


def read_saelens(path: str | Path) -> tuple[SAECheckpointConfig, dict[str, torch.Tensor]]:
    """Our config and checkpoint-layout tensors for the SAELens checkpoint directory ``path``."""
    path = Path(path)
    sl = read_peer_json(path / CFG_FILE)
    w = {k: v.float() for k, v in load_weights(path / filenames.SAELENS_WEIGHTS_FILE).items()}
    arch = sl.get("architecture", "standard")
    if sl.get("normalize_activations", "none") not in ("none", None):
        raise CheckpointError(
            f"{path}: SAELens normalize_activations={sl['normalize_activations']!r} is not supported; "
            "export it with normalize_activations='none' (fold the scaling into the weights)"
        )
    if arch in ("skip_transcoder", "jumprelu_skip_transcoder"):
        raise CheckpointError(f"{path}: SAELens {arch} is not supported: its output adds x·W_skip, and our decode "
                              "is a function of the codes alone")
    transcoder = arch in ("transcoder", "jumprelu_transcoder")
    mapping = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated",
               "transcoder": "relu", "jumprelu_transcoder": "jumprelu"}
    if arch not in mapping:
        raise CheckpointError(f"{path}: SAELens architecture {arch!r} is not supported; supported: {', '.join(mapping)}")
    b_enc_key = "b_gate" if arch == "gated" else "b_enc"
    if transcoder and sl.get("apply_b_dec_to_input", False):
        raise CheckpointError(f"{path}: a SAELens transcoder with apply_b_dec_to_input=true is not valid SAELens")
    if not transcoder and not sl.get("apply_b_dec_to_input", True):
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
    if arch in ("jumprelu", "jumprelu_transcoder"):
        tensors["threshold"] = w["threshold"]
    if arch == "gated":
        tensors.update(r_mag=w["r_mag"], b_mag=w["b_mag"])
    hyper = {"k": int(sl["k"])} if arch == "topk" else {}
    meta = sl.get("metadata") or {}
    cfg = SAECheckpointConfig(
        name=path.name, architecture=mapping[arch], d_in=int(sl["d_in"]), d_sae=int(sl["d_sae"]), hyper=hyper,
        d_out=int(sl.get("d_out") or w["W_dec"].shape[1]) if transcoder else None,
        source=SourceInfo(model=meta.get("model_name"), layer=meta.get("hook_name"), imported_from="saelens",
                          layer_out=meta.get("hook_name_out") if transcoder else None),
        provenance={"format": "saelens", "path": str(path.resolve()), "peer_config": sl},
    )
    return cfg, tensors
