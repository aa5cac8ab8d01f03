"""An SAE attached at a layer, and the math it does there: record, splice, edit.

On the tokens the SAE reads (``valid`` and of its token kind), with x (M, d) their activations,
f = encode(x), x̂ = decode(f) and f' the edited latents:

- record: keep f (sparse);
- splice (``splice=True``): x ← decode(f'), the model runs on the SAE's reconstruction;
- splice with the error term kept (``keep_error=True``), or edits without splicing:
  x ← x + (decode(f') − decode(f)) = x + (f' − f) W_dec, computed on the edited columns only,
  so no edits change nothing, bit for bit, and an edit moves x by exactly what it asks.

Other positions keep the model's own activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sae_core.errors import SAEError
from sae_core.inference.edits import Edit, edited_features
from sae_core.inference.records import FeatureActs

if TYPE_CHECKING:
    from sae_core.checkpoint.sae import SAE
    from sae_core.protocols.running import LayerHook

KINDS = ("all", "cls", "register", "patch", "token")


@dataclass(frozen=True)
class SAEHook:
    """One SAE at one layer of the model, and what to do there (the modes combine)."""

    sae: SAE
    edits: Sequence[Edit] = ()
    splice: bool = False  # replace the activations by the SAE's reconstruction
    keep_error: bool = False  # with splice: add the SAE's error back, so only edits change anything
    record: bool = True  # keep the feature activations (sparse) in the run's result
    layer: str | None = None  # default: the layer the SAE was trained on (cfg.json source.layer)
    tokens: str | None = None  # token kind it reads; default: the one it was trained on
    name: str = field(default="")  # key in RunResult.features; default: the SAE's name

    def __post_init__(self) -> None:
        source = self.sae.cfg.source
        if self.layer is None:
            if not source.layer:
                raise SAEError("this SAE's cfg.json does not name its layer; pass SAEHook(sae, layer=NAME)")
            object.__setattr__(self, "layer", str(source.layer))
        if self.tokens is None:
            object.__setattr__(self, "tokens", str(source.tokens or "all"))
        if self.tokens not in KINDS:
            raise SAEError(f"unknown token kind {self.tokens!r}; use one of {', '.join(KINDS)}")
        if not self.name:
            object.__setattr__(self, "name", str(self.sae.cfg.name or self.layer))
        object.__setattr__(self, "edits", tuple(self.edits))
        for e in self.edits:
            e.check(self.sae.d_sae)
        if self.changes_activations:
            check_changes_allowed(self.sae, "splicing or editing it inside the model")

    @property
    def changes_activations(self) -> bool:
        return self.splice or bool(self.edits)

    def apply(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """x (M, d) selected activations -> (new activations (M, d) or None, latents f (M, d_sae)
        or None when neither recorded nor needed)."""
        if not self.changes_activations and not self.record:
            return None, None
        sae = self.sae
        with torch.no_grad():
            xf = x.to(sae.W_enc.dtype)
            f = sae.encode(xf)  # (M, d_sae)
            if not self.changes_activations:
                return None, f
            if self.splice and not self.keep_error:
                g = f.clone()
                for e in self.edits:
                    e.apply(g)
                return sae.decode(g).to(x.dtype), f
            cols = edited_features(self.edits)
            if not cols:
                return x, f  # error kept, nothing edited: the activations themselves
            sub = f[:, cols]  # (M, c)
            g = f.clone()
            for e in self.edits:
                e.apply(g)
            delta = (g[:, cols] - sub) @ sae.W_dec[cols]  # (M, d): decode(f') − decode(f)
            return (xf + delta).to(x.dtype), f


def check_changes_allowed(sae: SAE, what: str) -> None:
    """A one-line error for a transcoder: it reads ``source.layer`` and writes ``source.layer_out``,
    so replacing activations at one layer by its decoder output is not what it means; only its
    features can be recorded here (``downstream`` splices transcoders through the adapter's
    ``splice_eval(source=...)``)."""
    cfg = sae.cfg
    if getattr(cfg, "is_transcoder", False):
        raise SAEError(f"{cfg.name or 'this SAE'} is a transcoder ({cfg.source.layer} -> {cfg.source.layer_out}): "
                       f"{what} is not supported; record its features (SAEHook(sae), `sae features`) or measure it "
                       "with `sae analyze --only downstream`")


def kind_mask(kinds: Sequence[str], tokens: str, n: int) -> np.ndarray:
    """(n,) bool: positions of kind ``tokens`` among ``n`` positions. Positions beyond ``kinds``
    (a growing generation) count as ``token``."""
    if tokens == "all":
        return np.ones(n, dtype=bool)
    k = np.array(list(kinds[:n]) + ["token"] * max(0, n - len(kinds)))
    return k == tokens


def layer_hook(hooks: Sequence[SAEHook], kinds: Sequence[str], records: dict[str, list[Any]]) -> LayerHook:
    """One adapter callback applying ``hooks`` (all at the same layer) in order; each sees the
    previous one's output. Latents are appended to ``records[hook.name]`` as
    (rows, positions, f) per call."""

    def fn(acts: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
        t = acts.shape[1]
        out = None
        for h in hooks:
            sel = valid.to(acts.device).bool() & torch.from_numpy(kind_mask(kinds, h.tokens or "all", t)).to(acts.device)
            cur = acts if out is None else out
            new, f = h.apply(cur[sel])  # (M, d)
            if f is not None and h.record:
                rows, pos = torch.nonzero(sel, as_tuple=True)
                records.setdefault(h.name, []).append((rows.cpu(), pos.cpu(), f.detach()))
            if new is not None:
                out = cur.clone() if out is None else out
                out[sel] = new
        return out

    return fn


def collect(records: dict[str, list[Any]], hooks: Sequence[SAEHook]) -> dict[str, FeatureActs]:
    """Merge the per-call records of a run into one :class:`FeatureActs` per recording hook."""
    out: dict[str, FeatureActs] = {}
    for h in hooks:
        parts = records.get(h.name)
        if not h.record or not parts:
            continue
        rows, pos, f = parts[-1] if len(parts) == 1 else (torch.cat([p[0] for p in parts]),
                                                          torch.cat([p[1] for p in parts]),
                                                          torch.cat([p[2] for p in parts]))
        out[h.name] = FeatureActs(layer=str(h.layer), rows=rows, positions=pos, acts=f.float().cpu().to_sparse())
    return out
