"""The SAE spliced into its model on cache rows: what the ``downstream`` analysis reports.

Runs the rows clean, with the layer's activations replaced by the SAE's reconstruction on the
tokens it reads (*spliced*), and with those activations set to 0 (*zero-ablated*), through the
adapter's ``run_with_hooks`` (:mod:`sae_core.inference.compare` computes the metrics), and checks
that the live activations are the cached ones (``cache_rel_error``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sae_core.inference.compare import compare
from sae_core.inference.hook import SAEHook, kind_mask, layer_hook
from sae_core.inference.model import HookedModel

if TYPE_CHECKING:
    from sae_core.checkpoint.sae import SAE
    from sae_core.protocols.adapter import ModelAdapter
    from sae_core.protocols.dataset import Dataset
    from sae_core.protocols.running import LayerHook


class CacheCheck:
    """Accumulates ‖x_live − x_cache‖² and ‖x_cache‖² over the spliced tokens of each batch."""

    def __init__(self, cached: torch.Tensor, kinds: list[str], tokens: str) -> None:
        self.cached, self.kinds, self.tokens = cached, kinds, tokens  # cached: (n, T, d) rows in order
        self.lo = 0
        self.err = self.ref = 0.0

    def hook(self, rows: int) -> LayerHook:
        lo = self.lo

        def check(acts: torch.Tensor, valid: torch.Tensor) -> None:
            sel = valid.bool().cpu() & torch.from_numpy(kind_mask(self.kinds, self.tokens, acts.shape[1]))
            ref = self.cached[lo : lo + rows][sel]  # (M, d)
            live = acts.detach().float().cpu()[sel]
            if live.shape == ref.shape:
                self.err += float(((live - ref) ** 2).sum())
                self.ref += float((ref**2).sum())

        return check

    @property
    def rel_error(self) -> float | None:
        return (self.err / self.ref) ** 0.5 if self.ref > 0 else None


def _then(first: LayerHook, second: LayerHook) -> LayerHook:
    def fn(acts: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
        first(acts, valid)
        return second(acts, valid)

    return fn


def _zero(kinds: list[str], tokens: str) -> LayerHook:
    def fn(acts: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        sel = valid.to(acts.device).bool() & torch.from_numpy(kind_mask(kinds, tokens, acts.shape[1])).to(acts.device)
        out = acts.clone()
        out[sel] = 0
        return out

    return fn


def splice_metrics(
    adapter: ModelAdapter, sae: SAE, layer: str, index: np.ndarray, cached: torch.Tensor, *,
    kinds: list[str], tokens: str, dataset: Dataset | None = None, batch_rows: int = 8,
) -> dict[str, Any]:
    """``downstream.json`` metrics of ``sae`` spliced at ``layer`` on the cache rows ``index``
    (n, T) whose cached activations at that layer are ``cached`` (n, T, d)."""

    model = HookedModel(adapter)
    check = CacheCheck(cached, kinds, tokens)
    spliced = SAEHook(sae, splice=True, record=False, layer=layer, tokens=tokens)
    state = {"rows": 0}

    def batches() -> Any:
        for lo in range(0, len(index), batch_rows):
            part = index[lo : lo + batch_rows]
            check.lo, state["rows"] = lo, len(part)
            yield model.cached_inputs(part, dataset)

    variants = {
        "spliced": lambda inputs: {layer: _then(check.hook(state["rows"]), layer_hook([spliced], kinds, {}))},
        "zero_ablated": lambda inputs: {layer: _zero(kinds, tokens)},
    }
    result = compare(model, batches(), variants)
    s = result.summary()
    if result.kind == "lm":
        rec, rec_se = result.ce_recovered("spliced", "zero_ablated")
        out = {"kind": "lm_ce", **{k: s[k] for k in ("ce_clean", "ce_spliced", "ce_zero_ablated")},
               "ce_loss_recovered": rec, "ce_delta": s["ce_delta_spliced"], "n_targets": s["n_targets"],
               "kl_spliced": s["kl_spliced"], "kl_zero_ablated": s["kl_zero_ablated"],
               "n_kl_positions": s["n_kl_positions"],
               **{f"{k}_se": s[f"{k}_se"] for k in ("ce_clean", "ce_spliced", "ce_zero_ablated", "kl_spliced",
                                                    "kl_zero_ablated")},
               "ce_loss_recovered_se": rec_se, "ce_delta_se": s["ce_delta_spliced_se"]}
    else:
        out = {"kind": "embedding_cosine", "embedding": result.embedding_name,
               "embedding_cosine": s["cos_spliced"], "embedding_cosine_zero_ablated": s["cos_zero_ablated"],
               "embedding_cosine_se": s["cos_spliced_se"], "embedding_cosine_zero_ablated_se": s["cos_zero_ablated_se"],
               **{k: v for k, v in s.items() if k.startswith("zeroshot_")}}
    out["cache_rel_error"] = check.rel_error
    return out
