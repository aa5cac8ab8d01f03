"""dictionary_learning (saprmarks): ``ae.pt`` (a torch state dict) + ``config.json`` (``{"trainer":
{"dict_class", "trainer_class", "k", ...}, "buffer": {...}}``), one ``trainer_N/`` folder per SAE.

Each ``dict_class`` maps onto one of our architectures; the equations are theirs, W = weight:

=======================  ===================================================  ===========
dict_class (trainers)    inference                                            ours
=======================  ===================================================  ===========
AutoEncoder (standard,   f = ReLU(W_e(x − bias) + b_e), x̂ = W_d f + bias       relu
p_anneal)
AutoEncoderNew           f = ReLU(W_e x + b_e), x̂ = W_d f + b_d               relu (b_enc
                                                                              absorbs b_d W_e)
AutoEncoderTopK (top-k)  f = TopK_k(ReLU(W_e(x − b_dec) + b_e))               topk
BatchTopKSAE             a = ReLU(...), f = a·1[a > θ] (θ a scalar)           batchtopk
(batch-top-k)
MatryoshkaBatchTopKSAE   as BatchTopKSAE; group_sizes → prefixes              matryoshka
JumpReluAutoEncoder      pre = x W_enc + b_enc, f = ReLU(pre·1[pre > θ])      jumprelu (b_enc
(jumprelu)                                                                    absorbs b_dec W_enc)
GatedAutoEncoder (gated, gate/magnitude paths on x − decoder_bias            gated
gated_anneal)
=======================  ===================================================  ===========

``AutoEncoder.from_pretrained`` rescales the decoder to unit-norm columns (and the encoder by the
inverse) unless ``normalize_decoder=False``; we read it the way ``from_pretrained`` loads it, so
codes equal the peer's by default (reconstructions are the same either way). A negative
JumpReLU θ acts as 0 there (the ReLU), so it is read as max(θ, 0). ``ae.pt`` is read with
``torch.load(weights_only=True)``: tensors only, no code runs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, ClassVar

import torch

from sae_core import (
    WEIGHTS_FILE,
    CheckpointError,
    Exporter,
    ExportError,
    SAECheckpointConfig,
    SourceInfo,
    atomic_write_bytes,
    atomic_write_json,
    load_weights,
)
from sae_core.interop.detect import DL_CONFIG_FILE, DL_WEIGHTS_FILE

FORMAT = "dictionary_learning"
#: dict_class → our architecture
ARCHITECTURES = {"AutoEncoder": "relu", "AutoEncoderNew": "relu", "AutoEncoderTopK": "topk",
                 "BatchTopKSAE": "batchtopk", "MatryoshkaBatchTopKSAE": "matryoshka",
                 "JumpReluAutoEncoder": "jumprelu", "GatedAutoEncoder": "gated"}


def load_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """A torch state dict, read without running pickled code (``weights_only=True``)."""
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything but tensors, or a damaged zip
        raise CheckpointError(f"{file} cannot be read as a state dict of tensors ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); we only read weights_only files") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{file} is not a state dict of tensors; save it with torch.save(ae.state_dict(), ...)")
    return sd


def _need(path: Path, sd: dict[str, torch.Tensor], keys: list[str], cls: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: {cls} weights lack {', '.join(missing)}; the ae.pt does not match its config.json")


def read_dictionary_learning(path: str | Path, *, normalize_decoder: bool = True
                             ) -> tuple[SAECheckpointConfig, dict[str, torch.Tensor]]:
    """Our config and checkpoint-layout tensors for the dictionary_learning folder ``path``."""
    path = Path(path)
    doc, tr, cls = _read_config(path)
    sd = {k: v.float() for k, v in load_state_dict(path / DL_WEIGHTS_FILE).items()}
    tensors, hyper = _our_tensors(path, sd, cls, normalize_decoder=normalize_decoder)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    d_in, d_sae = tensors["W_enc"].shape
    layer = tr.get("submodule_name") or (f"layer {tr['layer']}" if tr.get("layer") is not None else None)
    cfg = SAECheckpointConfig(
        name=path.name, architecture=ARCHITECTURES[cls], d_in=d_in, d_sae=d_sae, hyper=hyper,
        source=SourceInfo(model=tr.get("lm_name"), layer=layer, imported_from=FORMAT),
        provenance={"format": FORMAT, "path": str(path.resolve()), "peer_config": doc},
    )
    return cfg, tensors


def _read_config(path: Path) -> tuple[Any, dict[str, Any], str]:
    """(the whole ``config.json``, its ``trainer`` section, its ``dict_class``), refused with a
    one-line error when it is not a dictionary_learning config or names a class we cannot read."""
    try:
        doc = json.loads((path / DL_CONFIG_FILE).read_text())
        tr = doc["trainer"]
        cls = tr["dict_class"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / DL_CONFIG_FILE} is not a dictionary_learning config ({e}); "
                              "it needs trainer.dict_class") from None
    if cls not in ARCHITECTURES:
        raise CheckpointError(f"{path}: dictionary_learning dict_class {cls!r} is not supported; supported: "
                              f"{', '.join(ARCHITECTURES)}")
    return doc, tr, cls


def _our_tensors(path: Path, sd: dict[str, torch.Tensor], cls: str, *, normalize_decoder: bool
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, hyper) of our architecture for ``dict_class`` ``cls``'s state dict ``sd``: the
    equations of the module docstring's table (biases absorbed where theirs differ from ours)."""
    hyper: dict[str, Any] = {}
    if cls in ("AutoEncoder", "AutoEncoderNew"):
        _need(path, sd, ["encoder.weight", "encoder.bias", "decoder.weight"], cls)
        W_enc, b_enc, W_dec = sd["encoder.weight"].T, sd["encoder.bias"], sd["decoder.weight"].T  # (d_in, d_sae), (d_sae,), (d_sae, d_in)
        if cls == "AutoEncoder":
            _need(path, sd, ["bias"], cls)
            b_dec = sd["bias"]
        else:
            _need(path, sd, ["decoder.bias"], cls)
            b_dec = sd["decoder.bias"]
            b_enc = b_enc + b_dec @ W_enc  # ReLU(W_e x + b) = ReLU(W_e (x − b_d) + b + b_d W_e)
        if cls == "AutoEncoder" and normalize_decoder:  # as AutoEncoder.from_pretrained does
            norms = W_dec.norm(dim=-1)  # (d_sae,)
            W_dec, W_enc, b_enc = W_dec / norms[:, None], W_enc * norms, b_enc * norms
        tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    elif cls in ("AutoEncoderTopK", "BatchTopKSAE"):
        _need(path, sd, ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k"], cls)
        tensors = {"W_enc": sd["encoder.weight"].T, "b_enc": sd["encoder.bias"], "W_dec": sd["decoder.weight"].T,
                   "b_dec": sd["b_dec"]}
        hyper["k"] = int(sd["k"].item())
        if cls == "BatchTopKSAE":
            _need(path, sd, ["threshold"], cls)
            tensors["threshold"] = sd["threshold"].reshape(()).expand(tensors["b_enc"].shape).clone()  # (d_sae,)
    elif cls == "MatryoshkaBatchTopKSAE":
        _need(path, sd, ["W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"], cls)
        tensors = {k: sd[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
        tensors["threshold"] = sd["threshold"].reshape(()).expand(tensors["b_enc"].shape).clone()
        hyper.update(k=int(sd["k"].item()), base="batchtopk",
                     prefixes=[int(v) for v in torch.cumsum(sd["group_sizes"].long(), 0).tolist()])
    elif cls == "JumpReluAutoEncoder":
        _need(path, sd, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], cls)
        tensors = {k: sd[k] for k in ("W_enc", "W_dec", "b_dec")}
        # the file does not record apply_b_dec_to_input; dictionary_learning trains with False
        tensors["b_enc"] = sd["b_enc"] + sd["b_dec"] @ sd["W_enc"]
        tensors["threshold"] = sd["threshold"].clamp_min(0.0)
    else:  # GatedAutoEncoder
        _need(path, sd, ["encoder.weight", "decoder.weight", "decoder_bias", "gate_bias", "mag_bias", "r_mag"], cls)
        tensors = {"W_enc": sd["encoder.weight"].T, "b_enc": sd["gate_bias"], "W_dec": sd["decoder.weight"].T,
                   "b_dec": sd["decoder_bias"], "r_mag": sd["r_mag"], "b_mag": sd["mag_bias"]}
    return tensors, hyper


def _scalar_threshold(cfg: SAECheckpointConfig, theta: torch.Tensor) -> torch.Tensor:
    if not bool((theta == theta[0]).all()):
        raise ExportError(f"SAE {cfg.name!r} has one threshold per latent, and dictionary_learning's "
                          "BatchTopKSAE holds one scalar; use --format saelens (jumprelu)")
    return theta[0].clone()


def dl_mapping(cfg: SAECheckpointConfig, t: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """dictionary_learning's config.json and ae.pt state dict for one of our checkpoints."""
    if cfg.is_transcoder:
        raise ExportError(f"SAE {cfg.name!r} is a transcoder, and dictionary_learning has no transcoder class; "
                          "use --format saelens or --format sparsify")
    arch, h = cfg.architecture, cfg.hyper
    if arch == "matryoshka" and h.get("base") == "topk":
        arch = "topk"
    k = int(h.get("k", 0))
    if arch == "relu":
        cls, sd = "AutoEncoder", {"bias": t["b_dec"], "encoder.weight": t["W_enc"].T, "encoder.bias": t["b_enc"],
                                  "decoder.weight": t["W_dec"].T}
    elif arch in ("topk", "batchtopk"):
        cls = "AutoEncoderTopK" if arch == "topk" else "BatchTopKSAE"
        theta = _scalar_threshold(cfg, t["threshold"]) if arch == "batchtopk" else torch.tensor(-1.0)
        sd = {"k": torch.tensor(k, dtype=torch.int), "threshold": theta.float(), "decoder.weight": t["W_dec"].T,
              "encoder.weight": t["W_enc"].T, "encoder.bias": t["b_enc"], "b_dec": t["b_dec"]}
    elif arch == "matryoshka":
        ends = [int(m) for m in h.get("prefixes") or []]
        if not ends:
            raise ExportError(f"SAE {cfg.name!r}: matryoshka cfg.json hyper has no prefixes")
        sizes = [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        cls, sd = "MatryoshkaBatchTopKSAE", {
            "k": torch.tensor(k, dtype=torch.int), "threshold": _scalar_threshold(cfg, t["threshold"]).float(),
            "group_sizes": torch.tensor(sizes), "W_enc": t["W_enc"], "b_enc": t["b_enc"], "W_dec": t["W_dec"],
            "b_dec": t["b_dec"]}
    elif arch == "jumprelu":
        cls, sd = "JumpReluAutoEncoder", {"W_enc": t["W_enc"], "b_enc": t["b_enc"] - t["b_dec"] @ t["W_enc"],
                                          "W_dec": t["W_dec"], "b_dec": t["b_dec"], "threshold": t["threshold"]}
    elif arch == "gated":
        cls, sd = "GatedAutoEncoder", {"decoder_bias": t["b_dec"], "r_mag": t["r_mag"], "gate_bias": t["b_enc"],
                                       "mag_bias": t["b_mag"], "encoder.weight": t["W_enc"].T,
                                       "decoder.weight": t["W_dec"].T}
    else:
        raise ExportError(f"SAE {cfg.name!r} is {cfg.architecture}, which has no dictionary_learning class; "
                          f"supported: {', '.join(sorted(set(ARCHITECTURES.values())))}")
    trainer = {"dict_class": cls, "trainer_class": "exported by sae", "activation_dim": cfg.d_in,
               "dict_size": cfg.d_sae, "lm_name": cfg.source.model, "submodule_name": cfg.source.layer,
               "layer": cfg.source.layer_index}
    if cls in ("AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
        trainer["k"] = k
    if cls == "MatryoshkaBatchTopKSAE":
        trainer["group_sizes"] = sd["group_sizes"].tolist()
    return {"trainer": trainer}, {k: v.detach().float().contiguous() if v.is_floating_point() else v
                                  for k, v in sd.items()}


class DictionaryLearningExporter(Exporter):
    """dictionary_learning's format (``ae.pt`` + ``config.json``, ``<dict_class>.from_pretrained``)."""

    name: ClassVar[str] = FORMAT

    def check(self, checkpoint: Path, cfg: SAECheckpointConfig) -> None:
        dl_mapping(cfg, load_weights(checkpoint / WEIGHTS_FILE))

    def write(self, checkpoint: Path, cfg: SAECheckpointConfig, out: Path) -> None:
        doc, sd = dl_mapping(cfg, load_weights(checkpoint / WEIGHTS_FILE))
        buf = io.BytesIO()
        torch.save(sd, buf)  # the peer's format is a torch state dict: tensors only
        atomic_write_bytes(out / DL_WEIGHTS_FILE, buf.getvalue())
        atomic_write_json(out / DL_CONFIG_FILE, doc)
