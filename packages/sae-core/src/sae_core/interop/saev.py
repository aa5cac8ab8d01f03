"""saev (OSU NLP group, SAEs on ViT activations): ``sae.pt`` = one JSON line (its
``config.SparseAutoencoder``: ``d_vit``, ``exp_factor``, ...) then ``torch.save(state_dict)``.

saev's ``SparseAutoencoder`` is a ReLU SAE with our equations and tensor names exactly:
f = ReLU((x − b_dec) W_enc + b_enc), x̂ = f W_dec + b_dec, W_enc (d_vit, d_sae), W_dec
(d_sae, d_vit). It maps onto our ``relu``. The header says nothing about the ViT, its layer
or which tokens it saw; those are left unknown (``source`` is empty). The state dict is read
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from sae_core.checkpoint.cfg import SAECheckpointConfig, SourceInfo
from sae_core.errors import CheckpointError
from sae_core.interop.detect import saev_file, saev_header

FORMAT = "saev"


def read_saev(path: str | Path) -> tuple[SAECheckpointConfig, dict[str, torch.Tensor]]:
    """Our config and checkpoint-layout tensors for a saev ``sae.pt`` (or a folder holding one)."""
    path = Path(path)
    file = saev_file(path)
    if file is None:
        raise CheckpointError(f"{path} is not a saev checkpoint (no sae.pt whose first line is a JSON header with d_vit)")
    header = saev_header(file) or {}
    with open(file, "rb") as f:
        f.readline()
        buf = io.BytesIO(f.read())
    try:
        sd = torch.load(buf, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{file}: the state dict after the header cannot be read with weights_only=True "
                              f"({type(e).__name__}); save it with saev.nn.dump") from None
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in sd]
    if missing:
        raise CheckpointError(f"{file}: saev state dict lacks {', '.join(missing)}; only saev's ReLU "
                              "SparseAutoencoder is read")
    tensors = {k: sd[k].float().contiguous() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    d_in, d_sae = tensors["W_enc"].shape
    if int(header.get("d_vit", d_in)) != d_in:
        raise CheckpointError(f"{file}: header says d_vit={header['d_vit']} but W_enc is {tuple(tensors['W_enc'].shape)}")
    name = file.parent.name if file.name == "sae.pt" else file.stem
    cfg = SAECheckpointConfig(
        name=name, architecture="relu", d_in=d_in, d_sae=d_sae,
        source=SourceInfo(imported_from=FORMAT),
        provenance={"format": FORMAT, "path": str(file.resolve()), "peer_config": header},
    )
    return cfg, tensors
