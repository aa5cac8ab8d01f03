"""The unembedding of a text model (``ModelAdapter.unembedding``): its LM head and final norm.

Only causal language models whose head is linear after the final norm have one here: a BERT
MLM head applies a dense layer and GELU before its decoder, so a direction's effect on the
logits is not a fixed linear map, and a model loaded as ``AutoModel`` has no head at all.
"""

from __future__ import annotations

from typing import Any

from sae_core.errors import SAEError
from sae_core.protocols import Unembedding

#: names of the final norm on the base model, by family (GPT-2 ln_f, Llama/Mistral/Qwen norm,
#: GPT-NeoX final_layer_norm, Phi final_layernorm, ...)
FINAL_NORMS = ("ln_f", "norm", "final_layer_norm", "final_layernorm", "ln_final", "final_norm")


def _norm_kind(module: Any) -> tuple[str, Any]:
    """("layernorm" | "rmsnorm", effective elementwise scale) of a norm module."""
    import torch

    cls = type(module).__name__
    weight = getattr(module, "weight", None)
    if isinstance(module, torch.nn.LayerNorm) or cls.endswith("LayerNorm"):
        return "layernorm", weight
    if "RMSNorm" in cls:
        if weight is not None and cls.startswith("Gemma"):  # Gemma scales by (1 + weight)
            weight = 1 + weight
        return "rmsnorm", weight
    raise SAEError(f"the final norm {cls} is neither a LayerNorm nor an RMSNorm; its effect on logits is unknown")


def hf_unembedding(model: Any, *, causal: bool) -> Unembedding:
    """The unembedding of a ``transformers`` model: ``lm_head`` (``get_output_embeddings``) and the
    base model's final norm."""
    if not causal:
        raise SAEError(f"{type(model).__name__} is not a causal language model (an encoder has no next-token "
                       "unembedding; a masked-LM head is not linear after the final norm)")
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise SAEError(f"{type(model).__name__} has no LM head (loaded without one, e.g. as AutoModel)")
    base = getattr(model, "base_model", model)
    name, norm = next(((n, getattr(base, n)) for n in FINAL_NORMS if getattr(base, n, None) is not None), (None, None))
    W_U = head.weight.detach().T  # (d_model, d_vocab)
    if norm is None:
        return Unembedding(W_U=W_U, norm="none", source=f"{type(head).__name__} weight; no final norm found")
    kind, weight = _norm_kind(norm)
    return Unembedding(W_U=W_U, norm=kind, norm_weight=None if weight is None else weight.detach(),
                       source=f"get_output_embeddings().weight, final norm {name} ({type(norm).__name__})")


def tlens_unembedding(model: Any, kind: str, *, causal: bool) -> Unembedding:
    """The unembedding of a HookedTransformer (``W_U``, ``ln_final``; a ``*Pre`` normalization
    type means the scale is already folded in) or of a TransformerBridge's Hugging Face model."""
    if kind != "hooked":
        hf = getattr(model, "original_model", None)
        if hf is None:
            raise SAEError("the TransformerBridge exposes no original_model to read the LM head from")
        return hf_unembedding(hf, causal=causal)
    if not causal:
        raise SAEError("the model is not a causal language model (bidirectional attention): no next-token unembedding")
    nt = getattr(model.cfg, "normalization_type", None)
    W_U = model.W_U.detach()  # (d_model, d_vocab)
    if nt in ("LN", "RMS"):
        return Unembedding(W_U=W_U, norm="layernorm" if nt == "LN" else "rmsnorm", norm_weight=model.ln_final.w.detach(),
                           source=f"HookedTransformer W_U, ln_final ({nt})")
    if nt in ("LNPre", "RMSPre"):
        return Unembedding(W_U=W_U, norm="layernorm" if nt == "LNPre" else "rmsnorm",
                           source=f"HookedTransformer W_U with ln_final folded in ({nt})")
    return Unembedding(W_U=W_U, norm="none", source="HookedTransformer W_U, no final norm")
