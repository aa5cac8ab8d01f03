"""``top-examples``: the k examples (images / text windows) on which each latent fires most.

"Most" is by magnitude: an example's score is the latent's largest |code| over its tokens
(``values``); ``token_acts`` keep the codes' signs. One streaming pass with bounded memory: a running top-k per latent
over examples, scored by the
latent's maximum over the example's tokens, merged chunk by chunk with ``torch.topk``; the
per-token activations of the current winners ride along, so no second pass is needed. Memory is
O(d_sae · k · tokens), independent of the cache size. Writes ``top_examples.safetensors`` (rows,
examples, values, token_acts [d_sae, k, T] f16, token_ids for text) and ``top_examples.json``
(k, split, n_rows, n_tokens, and what the viewer needs to draw examples). Runs inside the shared
pass (:mod:`sae_core.analyses.shared_pass`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from sae_core import AnalysisContext, CodeChunk, CodeConsumer, PassAnalysis, filenames, firing, magnitude
from sae_core.analyses.common import descriptive_side, option, save_json, save_safetensors


class TopExamples(PassAnalysis):
    """Top-k activating examples per latent with their per-token/per-patch activations."""

    name: ClassVar[str] = "top-examples"
    options: ClassVar[tuple[str, ...]] = ("k", "split", "max_tokens")

    def consumer(self, ctx: AnalysisContext) -> CodeConsumer:
        return TopExamplesConsumer(ctx, option(ctx, "k", 16, int, "positive"))


def example_meta(ctx: AnalysisContext) -> dict[str, Any]:
    """What the viewer needs to draw an example (shared by top_examples.json and quantile_examples.json)."""
    meta = ctx.reader.meta
    modality = meta.dataset.get("modality") or ("text" if "token" in meta.token_kinds else "image")
    return {"tokens_per_example": meta.tokens_per_example, "token_kinds": meta.token_kinds, "modality": modality,
            "cache": str(ctx.reader.path), "dataset": meta.dataset, "extra": meta.extra,
            "non_negative_codes": bool(getattr(ctx.sae, "non_negative_codes", True))}


class TopExamplesConsumer:
    """Running top-k examples per latent, merged chunk by chunk with ``torch.topk``."""

    def __init__(self, ctx: AnalysisContext, k: int) -> None:
        d_sae, t, dev = ctx.sae.d_sae, ctx.reader.meta.tokens_per_example, ctx.device
        self.ctx, self.k = ctx, k
        self.values = torch.zeros(d_sae, k, device=dev)
        self.rows = torch.full((d_sae, k), -1, dtype=torch.long, device=dev)
        self.examples = torch.full((d_sae, k), -1, dtype=torch.long, device=dev)
        self.token_acts = torch.zeros(d_sae, k, t, dtype=torch.float16, device=dev)
        self.token_ids = torch.full((d_sae, k, t), -1, dtype=torch.int32, device=dev)
        self.n_tokens = self.n_rows = 0
        self.non_negative = bool(getattr(ctx.sae, "non_negative_codes", True))

    def update(self, chunk: CodeChunk) -> None:
        k, dev = self.k, self.ctx.device
        d_sae, _, t = self.token_acts.shape
        n = len(chunk.rows)
        self.n_tokens += chunk.n_tokens
        self.n_rows += n
        # an example's score: the latent's strongest |code| over its tokens (a dense amax is faster than a scatter)
        codes = chunk.codes if self.non_negative else magnitude(chunk.codes)
        score = codes.amax(dim=1).T  # (d_sae, n)
        # two-stage merge (the chunk's own top k, then buffer + those): about twice as fast as one topk over both
        kc = min(k, n)
        chunk_vals, chunk_pick = score.topk(kc, dim=1)  # (d_sae, kc)
        self.values, pick = torch.cat([self.values, chunk_vals], dim=1).topk(k, dim=1)  # (d_sae, k)
        from_chunk = pick >= k
        if not bool(from_chunk.any()):
            return  # no new winner: the sorted buffers are unchanged
        index = chunk.index
        j = chunk_pick.gather(1, (pick - k).clamp(0, kc - 1))  # (d_sae, k) chunk row where the winner is new
        i = pick.clamp_max(k - 1)  # index into the buffer where it was kept
        chunk_ex = torch.from_numpy(np.ascontiguousarray(index["example"][:, 0])).to(dev)  # (n,)
        chunk_tok = torch.from_numpy(np.ascontiguousarray(index["token"], dtype=np.int32)).to(dev)  # (n, T)
        self.rows = torch.where(from_chunk, torch.from_numpy(chunk.rows).to(dev)[j], self.rows.gather(1, i))
        self.examples = torch.where(from_chunk, chunk_ex[j], self.examples.gather(1, i))
        it = i[..., None].expand(d_sae, k, t)
        # (d_sae, k, T): codes[j[l, q], :, l] gathered through flat indices, only the winners' rows
        small = torch.int32 if chunk.codes.numel() < 2**31 else torch.int64  # int32 arithmetic is much faster on CPU
        ar_t = torch.arange(t, device=dev, dtype=small)
        cell = (j.to(small)[..., None] * t + ar_t) * d_sae + torch.arange(d_sae, device=dev, dtype=small)[:, None, None]
        new_acts = chunk.codes.reshape(-1)[cell.long()].half()
        kept = self.token_acts.view(torch.int16).gather(1, it).view(torch.float16)  # f16 gathers are slow on CPU
        self.token_acts = torch.where(from_chunk[..., None], new_acts, kept)
        self.token_ids = torch.where(from_chunk[..., None], chunk_tok[j], self.token_ids.gather(1, it))

    def finish(self) -> dict[str, Any]:
        ctx, k = self.ctx, self.k
        rows, examples, values, token_acts = self.rows, self.examples, self.values, self.token_acts
        empty = ~firing(values)  # fewer than k firing examples: unfilled slots
        rows[empty], examples[empty], values[empty] = -1, -1, 0.0
        token_acts[empty] = 0
        tensors = {"rows": rows, "examples": examples, "values": values.float(), "token_acts": token_acts}
        if "token" in ctx.reader.meta.token_kinds:
            tensors["token_ids"] = self.token_ids
        save_safetensors(ctx.checkpoint / filenames.TOP_EXAMPLES_FILE, tensors)
        save_json(ctx.checkpoint / filenames.TOP_EXAMPLES_META_FILE, {
            "k": k, "split": descriptive_side(ctx), "n_rows": self.n_rows, "n_tokens": self.n_tokens,
            **example_meta(ctx),
        })
        return {"k": k, "split": descriptive_side(ctx), "n_rows": self.n_rows, "n_tokens": self.n_tokens,
                "latents_with_examples": int((rows[:, 0] >= 0).sum())}
