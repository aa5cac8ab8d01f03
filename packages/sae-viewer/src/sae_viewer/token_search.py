"""Search features by token (text SAEs): which latents' top examples fire most on a given token.

Reads ``top_examples.safetensors`` (``token_ids`` and ``token_acts``, both (d_sae, k, T)) in
chunks of latents, so a 65k-latent dictionary is searched without holding its whole top-example
tensor at once; the cache's ``vocab.json`` maps the typed text to token ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 4096  # latents per read: (CHUNK, k, T) ids + acts stay in the tens of MB


def token_ids_for(query: str, vocab: list[str]) -> list[int]:
    """Vocabulary ids whose readable form equals ``query`` (case-insensitive, without the
    tokenizer's word-boundary marks: '##', 'Ġ', '▁')."""
    from sae_viewer.data import detokenize

    q = query.strip().lower()
    if not q:
        return []
    return [i for i, piece in enumerate(vocab) if detokenize(piece).strip().lower() == q]


def search(path: Path, ids: list[int], limit: int = 50) -> list[dict[str, Any]]:
    """Latents whose top examples fire on any of ``ids``, strongest first:
    {latent, max_act (the largest |activation| on that token), hits (top examples where the latent
    fires on it)}. A latent counts only where it fires (activation != 0) on the token."""
    from safetensors import safe_open

    if not ids:
        return []
    wanted = np.asarray(ids, dtype=np.int32)
    best, hits = [], []
    with safe_open(str(path), "np") as f:
        if "token_ids" not in f.keys():  # noqa: SIM118
            return []
        d_sae = f.get_slice("token_ids").get_shape()[0]
        for start in range(0, d_sae, CHUNK):
            stop = min(start + CHUNK, d_sae)  # safetensors slices do not clip at the end
            tok = f.get_slice("token_ids")[start:stop]  # (c, k, T)
            acts = np.abs(f.get_slice("token_acts")[start:stop].astype(np.float32))  # (c, k, T)
            on = np.isin(tok, wanted) & (acts > 0)  # (c, k, T)
            best.append(np.where(on, acts, 0.0).max(axis=(1, 2)))  # (c,)
            hits.append(on.any(axis=2).sum(axis=1))  # (c,)
    score, count = np.concatenate(best), np.concatenate(hits)  # (d_sae,)
    order = [int(i) for i in np.argsort(-score, kind="stable") if score[i] > 0][:limit]
    return [{"latent": i, "max_act": float(score[i]), "hits": int(count[i])} for i in order]
