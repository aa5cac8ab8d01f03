"""EleutherAI sparsify: ``cfg.json`` (SparseCoderConfig + ``d_in``) + ``sae.safetensors``, one
folder per hook.

Its inference (``SparseCoder.encode``/``decode``)::

    pre = ReLU((x − b_dec) Wᵀ + b)          (transcoders: ReLU(x Wᵀ + b), the input is not centred)
    f   = TopK_k(pre)                        x̂ = f W_dec + b_dec

with ``encoder.weight`` W (d_sae, d_in), ``encoder.bias`` b, ``W_dec`` (d_sae, d_in), ``b_dec``.
That is our ``topk`` exactly (the ReLU before or after the top-k keeps the same values), with
W_enc = Wᵀ; a sparsify transcoder is our topk transcoder with d_out = d_in. Not mapped (refused
with the reason): ``activation="groupmax"`` and ``skip_connection`` (x W_skipᵀ is added to the
output, which our decode, a function of the codes alone, cannot hold). ``multi_topk`` only
changes sparsify's training loss, so it is read as plain TopK.
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
    ExportError,
    SAECheckpointConfig,
    SourceInfo,
    atomic_write_json,
    load_weights,
    save_weights,
)
from sae_core.interop.detect import read_peer_json

FORMAT = "sparsify"


def read_sparsify(path: str | Path) -> tuple[SAECheckpointConfig, dict[str, torch.Tensor]]:
    """Our config and checkpoint-layout tensors for the sparsify checkpoint folder ``path``."""
    path = Path(path)
    sp = read_peer_json(path / CFG_FILE)
    if sp.get("activation", "topk") != "topk":
        raise CheckpointError(f"{path}: sparsify activation={sp['activation']!r} is not supported (only 'topk'); "
                              "there is no groupmax SAE here")
    if sp.get("skip_connection"):
        raise CheckpointError(f"{path}: sparsify skip_connection=true is not supported: its output adds x·W_skipᵀ, "
                              "and our decode is a function of the codes alone")
    w = load_weights(path / WEIGHTS_FILE)
    missing = [k for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if k not in w]
    if missing:
        raise CheckpointError(f"{path}: sparsify weights lack {', '.join(missing)}; it was saved without a decoder "
                              "or is damaged, save it again with SparseCoder.save_to_disk")
    d_sae, d_in = w["encoder.weight"].shape
    if int(sp["d_in"]) != d_in:
        raise CheckpointError(f"{path}: cfg.json says d_in={sp['d_in']} but encoder.weight is {tuple(w['encoder.weight'].shape)}")
    transcoder = bool(sp.get("transcode", False))
    tensors = {
        "W_enc": w["encoder.weight"].float().T.contiguous(),  # (d_in, d_sae)
        "b_enc": w["encoder.bias"].float(),  # (d_sae,)
        "W_dec": w["W_dec"].float(),  # (d_sae, d_out)
        "b_dec": w["b_dec"].float(),  # (d_out,)
    }
    d_out = tensors["W_dec"].shape[1]
    cfg = SAECheckpointConfig(
        name=path.name, architecture="topk", d_in=d_in, d_sae=d_sae, d_out=d_out if transcoder else None,
        hyper={"k": int(sp.get("k", 32))},
        source=SourceInfo(layer=path.name, imported_from=FORMAT),
        provenance={"format": FORMAT, "path": str(path.resolve()), "peer_config": sp},
    )
    return cfg, tensors


def sparsify_mapping(cfg: SAECheckpointConfig, tensors: dict[str, torch.Tensor]
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """sparsify's cfg.json and weights for one of our checkpoints (TopK inference only)."""
    from sae_core import get_component  # lazy: loads pluggy

    arch = get_component("architecture", cfg.architecture).factory
    target = arch.saelens_target(cfg.hyper) if hasattr(arch, "saelens_target") else None
    if target != "topk":
        raise ExportError(f"SAE {cfg.name!r} is {cfg.architecture}, and sparsify holds only TopK SAEs; "
                          "export topk (or matryoshka with base topk) SAEs, or use --format saelens")
    if cfg.is_transcoder and cfg.d_out != cfg.d_in:
        raise ExportError(f"SAE {cfg.name!r} is a transcoder with d_out={cfg.d_out} != d_in={cfg.d_in}; sparsify "
                          "transcoders map a layer onto one of the same width")
    sp = {"activation": "topk", "expansion_factor": max(1, cfg.d_sae // cfg.d_in), "normalize_decoder": True,
          "num_latents": cfg.d_sae, "k": int(cfg.hyper["k"]), "multi_topk": False, "skip_connection": False,
          "transcode": cfg.is_transcoder, "d_in": cfg.d_in}
    weights = {"encoder.weight": tensors["W_enc"].float().T.contiguous(),  # (d_sae, d_in)
               "encoder.bias": tensors["b_enc"].float().contiguous(),
               "W_dec": tensors["W_dec"].float().contiguous(),
               "b_dec": tensors["b_dec"].float().contiguous()}
    return sp, weights


class SparsifyExporter(Exporter):
    """EleutherAI sparsify's format (``SparseCoder.load_from_disk(DIR)``): TopK SAEs and transcoders."""

    name: ClassVar[str] = FORMAT

    def check(self, checkpoint: Path, cfg: SAECheckpointConfig) -> None:
        sparsify_mapping(cfg, load_weights(checkpoint / WEIGHTS_FILE))

    def write(self, checkpoint: Path, cfg: SAECheckpointConfig, out: Path) -> None:
        sp, weights = sparsify_mapping(cfg, load_weights(checkpoint / WEIGHTS_FILE))
        save_weights(out / WEIGHTS_FILE, weights)
        atomic_write_json(out / CFG_FILE, sp)
