"""Compare the model's output clean vs with hooks (splice, ablation, ...), over rows, with errors.

- Causal LMs (output kind ``lm``): next-token cross-entropy over targets that are document
  tokens (never BOS/CLS/SEP or padding; the first document token, predicted from BOS, counts),
  and KL(clean ‖ variant) of the next-token distributions at every position whose input is a
  document token (as SAELens does with its special tokens ignored).
- Encoders and ViTs (``embedding``): cosine of the final embedding with vs without the hooks;
  with a ``logit_scale`` (CLIP) also *zero-shot-style logits*: each image's clean embeddings of
  all compared images act as the class prompts, ``logits = scale · cos(e_i, e_j^clean)``, and the
  variant's logits are compared with the clean ones (mean |Δ logit|, KL of the softmax, top-1
  agreement).

Every metric comes with a standard error over rows (:mod:`sae_core.inference.stats`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sae_core.errors import SAEError
from sae_core.inference.stats import jackknife, ratio

if TYPE_CHECKING:
    from sae_core.inference.model import HookedModel
    from sae_core.protocols.running import LayerHook, ModelInputs, ModelOutput

#: a variant: hooks to run for a batch (built per batch, so hooks may carry per-batch state)
VariantHooks = Callable[["ModelInputs"], Mapping[str, "LayerHook"]]


@dataclass
class Comparison:
    """Per-row sums of a comparison; :meth:`summary` turns them into metrics with errors."""

    kind: str  # "lm" | "embedding"
    variants: list[str]
    rows: list[np.ndarray] = field(default_factory=list)  # per batch: (b, k) sums, columns below
    embeddings: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # "clean"/variant -> (b, dim) parts
    logit_scale: float | None = None
    embedding_name: str = ""

    def columns(self) -> list[str]:
        if self.kind == "lm":
            return ["n_targets", "nll_clean", "n_kl", *[f"{c}_{v}" for v in self.variants for c in ("nll", "kl")]]
        return [f"cos_{v}" for v in self.variants]

    def table(self) -> np.ndarray:
        return np.concatenate(self.rows) if self.rows else np.zeros((0, len(self.columns())))

    def summary(self) -> dict[str, Any]:
        """Metrics and their standard errors (``*_se``) over rows."""
        t = self.table()
        cols = {c: i for i, c in enumerate(self.columns())}
        out: dict[str, Any] = {"n_rows": len(t)}
        if self.kind == "lm":
            n_t, n_k = cols["n_targets"], cols["n_kl"]
            out["n_targets"] = int(t[:, n_t].sum())
            out["n_kl_positions"] = int(t[:, n_k].sum())
            if out["n_targets"] == 0:
                raise SAEError("the evaluated windows have no next-token targets; cache longer documents or more rows")
            out["ce_clean"], out["ce_clean_se"] = jackknife(t, ratio(cols["nll_clean"], n_t))
            for v in self.variants:
                nll = cols[f"nll_{v}"]
                out[f"ce_{v}"], out[f"ce_{v}_se"] = jackknife(t, ratio(nll, n_t))
                out[f"ce_delta_{v}"], out[f"ce_delta_{v}_se"] = jackknife(
                    t, lambda s, a=nll, c=cols["nll_clean"]: (s[..., a] - s[..., c]) / s[..., n_t])
                out[f"kl_{v}"], out[f"kl_{v}_se"] = jackknife(t, ratio(cols[f"kl_{v}"], n_k))
            return out
        for v in self.variants:
            out[f"cos_{v}"], out[f"cos_{v}_se"] = jackknife(np.stack([t[:, cols[f"cos_{v}"]], np.ones(len(t))], 1), ratio(0, 1))
        if self.logit_scale is not None and self.embeddings:
            out.update(self._zeroshot())
        return out

    def delta(self, a: str, b: str) -> tuple[float | None, float | None]:
        """Paired difference of variant ``a`` and ``b`` ("clean" allowed for LMs) on the same rows:
        CE_a − CE_b for LMs, mean cos_a − cos_b for embeddings; with its error."""
        cols = {c: i for i, c in enumerate(self.columns())}
        t = self.table()
        if self.kind == "lm":
            i, j, n = cols[f"nll_{a}"], cols[f"nll_{b}"], cols["n_targets"]
            return jackknife(t, lambda u: (u[..., i] - u[..., j]) / u[..., n])
        diff = t[:, cols[f"cos_{a}"]] - t[:, cols[f"cos_{b}"]]
        return jackknife(np.stack([diff, np.ones(len(t))], 1), ratio(0, 1))

    def ce_recovered(self, spliced: str, zero: str) -> tuple[float | None, float | None]:
        """(CE_zero − CE_spliced) / (CE_zero − CE_clean) and its error (None if CE_zero = CE_clean)."""
        cols = {c: i for i, c in enumerate(self.columns())}
        z, s, c = cols[f"nll_{zero}"], cols[f"nll_{spliced}"], cols["nll_clean"]
        t = self.table()
        den = t[:, z].sum() - t[:, c].sum()
        if abs(den) <= 1e-12 * max(1.0, abs(t[:, c].sum())):
            return None, None
        return jackknife(t, lambda u: (u[..., z] - u[..., s]) / (u[..., z] - u[..., c]))

    def _zeroshot(self) -> dict[str, Any]:
        clean = torch.nn.functional.normalize(torch.cat(self.embeddings["clean"]).double(), dim=-1)  # (n, dim)
        scale = float(self.logit_scale or 1.0)
        ref = scale * clean @ clean.T  # (n, n): image i vs the clean embedding of image j as a "class"
        out: dict[str, Any] = {"zeroshot_logit_scale": scale, "zeroshot_classes": len(clean)}
        for v in self.variants:
            emb = torch.nn.functional.normalize(torch.cat(self.embeddings[v]).double(), dim=-1)
            logits = scale * emb @ clean.T  # (n, n)
            change = (logits - ref).abs().mean(-1)  # (n,)
            kl = (ref.softmax(-1) * (ref.log_softmax(-1) - logits.log_softmax(-1))).sum(-1)
            agree = (logits.argmax(-1) == ref.argmax(-1)).double()
            for name, per_row in (("logit_change", change), ("kl", kl), ("top1_agreement", agree)):
                ones = np.ones(len(per_row))
                out[f"zeroshot_{name}_{v}"], out[f"zeroshot_{name}_{v}_se"] = jackknife(
                    np.stack([per_row.numpy(), ones], 1), ratio(0, 1))
        return out


def compare(
    model: HookedModel, batches: Iterable[ModelInputs], variants: Mapping[str, VariantHooks],
    *, keep_embeddings: bool = True,
) -> Comparison:
    """Run each batch clean and under every variant's hooks; accumulate per-row sums."""
    result: Comparison | None = None
    for inputs in batches:
        clean = model.run_hooks(inputs, {})
        if result is None:
            result = Comparison(kind=str(clean.kind), variants=list(variants), logit_scale=clean.logit_scale,
                                embedding_name=clean.embedding_name)
            if result.kind not in ("lm", "embedding"):
                raise SAEError(f"adapter {model.adapter.name!r} returned output kind {clean.kind!r}; "
                               "comparisons need 'lm' (logits) or 'embedding'")
        outs = {v: model.run_hooks(inputs, hooks(inputs)) for v, hooks in variants.items()}
        if result.kind == "lm":
            result.rows.append(_lm_rows(inputs, clean, outs))
        else:
            result.rows.append(_embedding_rows(clean, outs))
            if keep_embeddings and result.logit_scale is not None:
                result.embeddings.setdefault("clean", []).append(clean.embedding.detach().float().cpu())
                for v, out in outs.items():
                    result.embeddings.setdefault(v, []).append(out.embedding.detach().float().cpu())
    if result is None:
        raise SAEError("nothing to compare: no rows were given")
    return result


def _lm_rows(inputs: ModelInputs, clean: ModelOutput, outs: dict[str, ModelOutput]) -> np.ndarray:
    """(b, 3 + 2·variants): n_targets, Σ NLL clean, n_kl, then Σ NLL and Σ KL per variant."""
    logits = clean.logits
    device = logits.device
    tokens = torch.as_tensor(inputs.token_ids, device=device).long()  # (b, T)
    real = np.ones(inputs.shape, dtype=bool) if inputs.attention is None else inputs.attention.astype(bool)
    doc = real if inputs.document is None else inputs.document.astype(bool) & real
    target = torch.from_numpy(doc[:, 1:]).to(device)  # (b, T-1): the next token is a document token
    at = torch.from_numpy(doc).to(device)  # (b, T): KL where the input is a document token
    logp_clean = torch.log_softmax(logits.float(), dim=-1)  # (b, T, V)

    def nll(logp: torch.Tensor) -> torch.Tensor:
        per = -logp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]  # (b, T-1)
        return (per * target).sum(1).double()

    cols = [target.sum(1).double(), nll(logp_clean), at.sum(1).double()]
    for out in outs.values():
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        kl = (logp_clean.exp() * (logp_clean - logp)).sum(-1)  # (b, T) KL(clean ‖ variant)
        cols += [nll(logp), (kl * at).sum(1).double()]
    return torch.stack(cols, 1).cpu().numpy()


def _embedding_rows(clean: ModelOutput, outs: dict[str, ModelOutput]) -> np.ndarray:
    """(b, variants): cosine of each row's embedding with vs without the variant's hooks."""
    ref = clean.embedding.float().flatten(1)
    cols = [torch.nn.functional.cosine_similarity(ref, out.embedding.float().flatten(1), dim=-1).double()
            for out in outs.values()]
    return torch.stack(cols, 1).cpu().numpy()
