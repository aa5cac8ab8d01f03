"""``top-examples``: the k examples (images / text windows) on which each latent fires most.

"Most" is by magnitude: an example's score is the latent's largest |code| over its tokens
(``values``); ``token_acts`` keep the codes' signs. One streaming pass with bounded memory: a running top-k per latent over examples, scored by the
latent's maximum over the example's tokens, merged chunk by chunk with ``torch.topk``; the
per-token activations of the current winners ride along, so no second pass is needed. Memory is
O(d_sae · k · tokens), independent of the cache size. Writes ``top_examples.safetensors`` (rows,
examples, values, token_acts [d_sae, k, T] f16, token_ids for text) and ``top_examples.json``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from sae_core.analyses.common import (
    analysis_rows,
    encode_tokens,
    iter_rows,
    option,
    save_json,
    save_safetensors,
    selected_mask,
)
from sae_core.codes import firing, magnitude
from sae_core.layout import TOP_EXAMPLES_FILE, TOP_EXAMPLES_META_FILE
from sae_core.protocols.analysis import Analysis, AnalysisContext


class TopExamples(Analysis):
    """Top-k activating examples per latent with their per-token/per-patch activations."""

    name: ClassVar[str] = "top-examples"
    options: ClassVar[tuple[str, ...]] = ("k", "split")

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        k = option(ctx, "k", 16, int, "positive")
        d_sae, meta = ctx.sae.d_sae, ctx.reader.meta
        t = meta.tokens_per_example
        dev = ctx.device
        values = torch.zeros(d_sae, k, device=dev)
        rows = torch.full((d_sae, k), -1, dtype=torch.long, device=dev)
        examples = torch.full((d_sae, k), -1, dtype=torch.long, device=dev)
        token_acts = torch.zeros(d_sae, k, t, dtype=torch.float16, device=dev)
        token_ids = torch.full((d_sae, k, t), -1, dtype=torch.int32, device=dev)
        # the merge costs O(d_sae * k * T) per chunk whatever its size: big chunks (2**24 latent
        # values, 64 MB) amortise it; small ones spent more time merging than encoding
        chunk_rows = max(1, min(256, 2**24 // max(t * d_sae, 1)))
        for row_ids, x, index in iter_rows(ctx, analysis_rows(ctx), chunk_rows):
            keep = selected_mask(ctx, index)  # (n, T)
            f = encode_tokens(ctx, x) * keep[..., None]  # (n, T, d_sae) codes
            score = magnitude(f).amax(dim=1).T  # (d_sae, n): strongest firing, whatever its sign

            values, pick = torch.cat([values, score], dim=1).topk(k, dim=1)  # (d_sae, k)
            from_chunk = pick >= k
            j = (pick - k).clamp_min(0)  # index into the chunk where the winner is new
            i = pick.clamp_max(k - 1)  # index into the buffer where it was kept
            chunk_ex = torch.from_numpy(np.ascontiguousarray(index["example"][:, 0])).to(dev)  # (n,)
            chunk_tok = torch.from_numpy(np.ascontiguousarray(index["token"], dtype=np.int32)).to(dev)  # (n, T)
            rows = torch.where(from_chunk, torch.from_numpy(row_ids).to(dev)[j], rows.gather(1, i))
            examples = torch.where(from_chunk, chunk_ex[j], examples.gather(1, i))
            jt, it = j[..., None].expand(d_sae, k, t), i[..., None].expand(d_sae, k, t)
            token_acts = torch.where(
                from_chunk[..., None], f.permute(2, 0, 1).half().gather(1, jt), token_acts.gather(1, it)
            )
            token_ids = torch.where(from_chunk[..., None], chunk_tok[j], token_ids.gather(1, it))
        empty = ~firing(values)  # fewer than k firing examples: unfilled slots
        rows[empty], examples[empty], values[empty] = -1, -1, 0.0
        token_acts[empty] = 0
        tensors = {"rows": rows, "examples": examples, "values": values.float(), "token_acts": token_acts}
        if "token" in meta.token_kinds:
            tensors["token_ids"] = token_ids
        save_safetensors(ctx.checkpoint / TOP_EXAMPLES_FILE, tensors)
        modality = meta.dataset.get("modality") or ("text" if "token" in meta.token_kinds else "image")
        save_json(ctx.checkpoint / TOP_EXAMPLES_META_FILE, {
            "k": k, "tokens_per_example": t, "token_kinds": meta.token_kinds, "modality": modality,
            "cache": str(ctx.reader.path), "dataset": meta.dataset, "extra": meta.extra,
            "non_negative_codes": bool(getattr(ctx.sae, "non_negative_codes", True)),
        })
        return {"k": k, "latents_with_examples": int((rows[:, 0] >= 0).sum())}
