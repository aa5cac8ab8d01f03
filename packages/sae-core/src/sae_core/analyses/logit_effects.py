"""``logit-effects``: the tokens each latent's decoder direction promotes and suppresses.

A latent adds ``code · W_dec[f]`` to the layer it writes (a transcoder: its output layer). Read
straight through the unembedding — the "logit lens" of the decoder direction, SAEDashboard's
logit table — that is ``W_dec[f] @ W_U``, with the model's final norm handled as SAEDashboard
does on a TransformerLens model loaded with ``fold_ln`` (and ``center_unembed``):

- the final norm's scale is folded into W_U: ``W_U' = diag(w) W_U``;
- LayerNorm's centring is a projection onto mean-zero vectors, folded as W_U' centred over
  d_model (equivalently: the direction's mean is removed); RMSNorm does not centre;
- the norm's denominator (the std / RMS of the residual, which depends on the token) is *not*
  applied: these are directions' effects up to that per-token scale;
- each latent's logit vector is centred over the vocabulary (``center_unembed``: softmax does
  not see a constant shift, so only differences between tokens mean anything).

:func:`folded_unembedding` builds W_U' (d_model, d_vocab) from the adapter's
:class:`~sae_core.protocols.adapter.Unembedding`; :func:`logit_effects` computes the top / bottom
``n`` tokens blockwise (memory O(block · d_vocab)). The model is re-created from the cache's
metadata like ``downstream`` does; adapters without ``ModelAdapter.unembedding`` (ViTs) and
models without an unembedding (encoders such as MiniLM) get ``{"skipped": reason}`` in
``logit_effects.json``. Writes ``logit_effects.safetensors`` (``top_ids``, ``top_values``,
``bottom_ids``, ``bottom_values`` [d_sae, n]: int64 token ids, float32 logit effects, strongest
first) and ``logit_effects.json``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sae_core import Analysis, AnalysisContext, ModelAdapter, SAEError, UnknownComponentError, filenames, load_vocab, shared_adapter
from sae_core.analyses.common import layer_and_positions, option, save_json, save_safetensors, target_layer

#: logit entries per block (block · d_vocab floats)
BLOCK_ENTRIES = 2**25
#: hooks whose vectors are not in the residual stream's basis even when their width equals d_model
#: (per-head attention vectors): a decoder direction there does not reach the unembedding directly
NOT_RESIDUAL = ("hook_z", "hook_q", "hook_k", "hook_v", "hook_result", "hook_pattern", "hook_attn_scores")


def folded_unembedding(u: Any, *, center_vocab: bool = True) -> torch.Tensor:
    """(d_model, d_vocab) float32: the final norm folded into W_U as TransformerLens's
    ``fold_ln`` + ``center_unembed`` do (see the module docstring); ``u`` an ``Unembedding``."""
    W = u.W_U.detach().float()  # (d_model, d_vocab)
    if u.norm_weight is not None:
        W = W * u.norm_weight.detach().float().to(W.device)[:, None]
    if u.norm == "layernorm":
        W = W - W.mean(dim=0, keepdim=True)  # LayerNorm centres its input: only the mean-free part counts
    if center_vocab:
        W = W - W.mean(dim=1, keepdim=True)
    return W


def logit_effects(W_dec: torch.Tensor, W_U: torch.Tensor, n: int = 10, *, block: int | None = None
                  ) -> dict[str, torch.Tensor]:
    """Top and bottom ``n`` entries of ``W_dec @ W_U`` per latent: ``top_ids``, ``top_values``,
    ``bottom_ids``, ``bottom_values`` (d_sae, n) (bottom: most negative first). W_dec (d_sae, d),
    W_U (d, d_vocab), computed ``block`` latents at a time on W_U's device."""
    d_sae, d_vocab = W_dec.shape[0], W_U.shape[1]
    n = max(0, min(int(n), d_vocab))
    block = block or max(1, min(d_sae, BLOCK_ENTRIES // max(d_vocab, 1)))
    dev = W_U.device
    out = {k: torch.empty(d_sae, n, dtype=torch.long if k.endswith("ids") else torch.float32)
           for k in ("top_ids", "top_values", "bottom_ids", "bottom_values")}
    for lo in range(0, d_sae, block):
        logits = W_dec[lo : lo + block].detach().float().to(dev) @ W_U  # (b, d_vocab)
        v, i = logits.topk(n, dim=1)
        out["top_values"][lo : lo + block], out["top_ids"][lo : lo + block] = v.cpu(), i.cpu()
        v, i = logits.topk(n, dim=1, largest=False)
        out["bottom_values"][lo : lo + block], out["bottom_ids"][lo : lo + block] = v.cpu(), i.cpu()
    return out


class LogitEffects(Analysis):
    """Tokens each latent's decoder direction promotes / suppresses through the unembedding (LMs)."""

    name: ClassVar[str] = "logit-effects"
    options: ClassVar[tuple[str, ...]] = ("logit_n",)

    def run(self, ctx: AnalysisContext) -> dict[str, Any]:
        from sae_core import get_component  # lazy: loads pluggy

        n = option(ctx, "logit_n", 10, int, "positive")
        meta = ctx.reader.meta
        li, _ = layer_and_positions(ctx)
        lo = target_layer(ctx)  # a transcoder's decoder writes its output layer
        layer = meta.layers[li if lo is None else lo]
        head: dict[str, Any] = {"adapter": meta.adapter, "model": meta.model, "layer": layer}
        if layer.rsplit(".", 1)[-1] in NOT_RESIDUAL:
            return self._skip(ctx, head, f"layer {layer} holds per-head attention vectors, not the residual stream: "
                                         "its decoder directions do not reach the unembedding directly")
        if meta.extra.get("causal") is False:  # recorded by the hf adapter: known without loading the model
            return self._skip(ctx, head, f"{meta.model} is not a causal language model (cache metadata causal=false): "
                                         "an encoder has no next-token unembedding")
        try:
            component = get_component("adapter", meta.adapter)
        except UnknownComponentError as e:
            return self._skip(ctx, head, f"the adapter plugin that made the cache is not installed: {e}")
        factory = component.factory

        if isinstance(factory, type) and issubclass(factory, ModelAdapter) and not factory.supports("unembedding"):
            return self._skip(ctx, head, f"adapter {meta.adapter!r} exposes no unembedding (ModelAdapter.unembedding)")
        try:
            adapter = self._adapter(component, meta, ctx.device)
            u = adapter.unembedding()
        except (SAEError, OSError) as e:
            return self._skip(ctx, head, f"no unembedding: {e}")
        W_dec = ctx.sae.W_dec  # (d_sae, d_out)
        if W_dec.shape[1] != u.W_U.shape[0]:
            return self._skip(ctx, head, f"the SAE's decoder writes {W_dec.shape[1]} dims but the unembedding reads "
                                         f"d_model={u.W_U.shape[0]} (layer {layer} is not the residual stream)")
        W_U = folded_unembedding(u).to(ctx.device)  # (d_model, d_vocab)
        effects = logit_effects(W_dec, W_U, n)
        save_safetensors(ctx.checkpoint / filenames.LOGIT_EFFECTS_FILE, effects)
        ids = sorted(set(effects["top_ids"].flatten().tolist()) | set(effects["bottom_ids"].flatten().tolist()))
        strings = _token_strings(ctx, adapter, ids)
        doc = {**head, "n": n, "d_vocab": int(W_U.shape[1]),
               "norm": {"final_norm": u.norm, "scale_folded": u.norm_weight is not None or u.norm == "none",
                        "centred_over_d_model": u.norm == "layernorm", "centred_over_vocab": True,
                        "denominator": "not applied", "source": u.source},
               "tokens": {str(i): s for i, s in zip(ids, strings, strict=True)}}
        save_json(ctx.checkpoint / filenames.LOGIT_EFFECTS_META_FILE, doc)
        return {"n": n, "d_vocab": int(W_U.shape[1])}

    def _adapter(self, component: Any, meta: Any, device: str) -> Any:

        return shared_adapter(component, meta, device)  # one model for every analysis of the run

    def _skip(self, ctx: AnalysisContext, head: dict[str, Any], why: str) -> dict[str, Any]:
        result = {**head, "skipped": why}
        save_json(ctx.checkpoint / filenames.LOGIT_EFFECTS_META_FILE, result)
        (ctx.checkpoint / filenames.LOGIT_EFFECTS_FILE).unlink(missing_ok=True)  # never a stale table beside a skip
        return result


def _token_strings(ctx: AnalysisContext, adapter: Any, ids: list[int]) -> list[str]:
    """Raw token pieces of ``ids``: the cache's vocab.json (what the viewer shows), else the
    adapter's tokenizer, else ``<id N>``."""

    vocab = load_vocab(ctx.reader.path)
    if vocab is None and getattr(adapter, "tokenizer", None) is not None:
        return [str(t) for t in adapter.tokenizer.convert_ids_to_tokens(ids)]
    return [vocab[i] if vocab is not None and 0 <= i < len(vocab) else f"<id {i}>" for i in ids]
