"""Running a transformer_lens model with callbacks at hook points (``TLensAdapter``'s half of
:mod:`sae_core.protocols.running`): what ``sae features|steer|ablate``, the Python API of
``sae_core.inference`` and the ``downstream`` analysis run on.

Inputs are the cache's windows: a text becomes the same [BOS]/[CLS] … [SEP] windows with the same
``valid`` rule (specials only with ``include_special``), so SAEs read the tokens they were trained
on. The output of a causal LM is its logits; of an encoder (BERT-style, MiniLM) the mean-pooled
final hidden state over non-padding tokens (the sentence-transformers embedding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sae_core import Dataset, Generation, LayerHook, ModelInputs, ModelOutput, SAEError

from sae_text.adapters.windows import document_windows


def _tl_hook(fn: LayerHook, valid: torch.Tensor) -> Any:
    """A transformer_lens hook calling ``fn(acts (b, T, d), valid)``; head-shaped hook points
    (b, T, heads, d_head) are seen flattened to (b, T, heads·d_head)."""

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor | None:
        flat = act.reshape(*act.shape[:2], -1)
        new = fn(flat, valid)
        return None if new is None else new.reshape(act.shape)

    return hook


class TLensRunning:
    """Mixin of ``TLensAdapter`` (uses its model, tokenizer, cfg, context, special tokens)."""

    model: Any
    tokenizer: Any
    cfg: Any
    context: int
    include_special: bool
    special: Any
    request: Any
    kind: str
    model_id: str

    # -- inputs -------------------------------------------------------------------------------------
    def make_inputs(self, examples: Sequence[Any]) -> ModelInputs:
        """Texts -> the cache's windows (a long text spans several rows; ``example`` says whose)."""
        windows = []
        for i, text in enumerate(examples):
            if not isinstance(text, str):
                raise SAEError(f"the {self.model_id} adapter reads text; got a {type(text).__name__}")
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            found = list(document_windows(i, ids, self.context, self.special, None))
            if not found:
                raise SAEError(f"text {i} has no tokens; pass a non-empty text")
            windows += found
        tokens = np.stack([w.tokens for w in windows])  # (rows, context)
        pad = np.stack([w.pad for w in windows])
        special = np.stack([w.special for w in windows])
        positions = np.stack([w.positions for w in windows])
        return self._inputs(tokens, ~pad & (self.include_special | ~special), ~pad, positions,
                            np.array([w.doc for w in windows], dtype=np.int64), labels=True)

    def cached_inputs(self, index: np.ndarray, dataset: Dataset | None = None) -> ModelInputs:
        """Cache rows: the tokens and ``valid`` flags are in the index."""
        return self._inputs(index["token"].astype(np.int64), index["valid"].astype(bool), self._attention(index),
                            index["position"].astype(np.int64), index["example"][:, 0].astype(np.int64))

    def _inputs(self, tokens: np.ndarray, valid: np.ndarray, attention: np.ndarray, positions: np.ndarray,
                example: np.ndarray, labels: bool = False) -> ModelInputs:
        return ModelInputs(
            data=torch.from_numpy(tokens), valid=valid, kinds=["token"] * tokens.shape[1], example=example,
            attention=attention, document=(positions >= 0) & attention, positions=positions, token_ids=tokens,
            labels=[self.tokenizer.convert_ids_to_tokens(row.tolist()) for row in tokens] if labels else None,
        )

    def _attention(self, index: np.ndarray) -> np.ndarray:
        """(n, T) bool: non-padding positions of the cached windows, rebuilt from their layout
        (prefix specials, body tokens with position >= 0, suffix specials, then padding); token
        ids cannot tell padding apart when the pad id is also BOS/EOS (GPT-2)."""
        n_real = len(self.special.prefix) + (index["position"] >= 0).sum(1) + len(self.special.suffix)
        return np.arange(index.shape[1])[None, :] < n_real[:, None]

    # -- running ------------------------------------------------------------------------------------
    def is_causal_lm(self) -> bool:
        """Next-token LM (CE is meaningful) vs encoder (BERT-style: compare sentence embeddings)."""
        if self.kind == "hooked":
            return getattr(self.cfg, "attention_dir", "causal") != "bidirectional"
        hf = getattr(self.model, "original_model", None)
        return bool(getattr(getattr(hf, "config", None), "is_decoder", False)) or type(hf).__name__.endswith(
            ("ForCausalLM", "LMHeadModel")
        )

    @torch.no_grad()
    def run_with_hooks(self, inputs: ModelInputs, hooks: Mapping[str, LayerHook], *, output: bool = True) -> ModelOutput:
        device = torch.device(self.request.device)
        tokens = torch.as_tensor(inputs.data).long().to(device)  # (b, T)
        attention = torch.from_numpy(np.asarray(inputs.attention, dtype=bool)).long().to(device)
        valid = torch.from_numpy(np.asarray(inputs.valid, dtype=bool)).to(device)
        fwd = [(self._resolve_hook(layer), _tl_hook(fn, valid)) for layer, fn in hooks.items()]
        if not output:
            stop = max((int(name.split(".")[1]) for name, _ in fwd), default=-1) + 1
            if stop:
                self.model.run_with_hooks(tokens, fwd_hooks=fwd, return_type=None, attention_mask=attention,
                                          stop_at_layer=stop)
            return ModelOutput()
        if self.is_causal_lm():
            logits = self.model.run_with_hooks(tokens, fwd_hooks=fwd, return_type="logits", attention_mask=attention)
            return ModelOutput(kind="lm", logits=logits)  # (b, T, vocab)
        captured: dict[str, torch.Tensor] = {}

        def keep(act: torch.Tensor, hook: Any) -> None:
            captured["x"] = act

        last = f"blocks.{self.cfg.n_layers - 1}.hook_resid_post"
        self.model.run_with_hooks(tokens, fwd_hooks=[*fwd, (last, keep)], return_type=None, attention_mask=attention)
        w = attention[..., None].float()
        return ModelOutput(kind="embedding", embedding=(captured["x"].float() * w).sum(1) / w.sum(1),  # (b, d)
                           embedding_name="mean-pooled final hidden state")

    def generate(self, prompt: str, hooks: Mapping[str, LayerHook], *, max_new_tokens: int = 20) -> Generation:
        """Greedy decoding, one full forward per new token (no KV cache, so the hooks see and may
        edit every position at every step, exactly as in :meth:`run_with_hooks`)."""
        if not self.is_causal_lm():
            raise SAEError(f"{self.model_id} is an encoder, not a causal language model: it cannot generate text, "
                           "so steering works only on causal LMs (e.g. GPT-2, Pythia); use `sae features` or "
                           "`sae ablate` on encoders")
        prefix = list(self.special.prefix)
        toks = prefix + list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if len(toks) == len(prefix):
            raise SAEError("the prompt has no tokens; pass a non-empty --prompt")
        n_ctx = int(getattr(self.cfg, "n_ctx", 0) or 0)
        if n_ctx and len(toks) + max_new_tokens > n_ctx:
            raise SAEError(f"prompt ({len(toks)} tokens) + --max-new-tokens {max_new_tokens} exceeds the model's "
                           f"context of {n_ctx} tokens; shorten the prompt or generate fewer tokens")
        eos = getattr(self.tokenizer, "eos_token_id", None)
        new: list[int] = []
        for _ in range(max_new_tokens):
            seq = np.array([toks + new], dtype=np.int64)  # (1, T)
            t = seq.shape[1]
            doc = np.arange(t)[None, :] >= len(prefix)
            inputs = ModelInputs(data=torch.from_numpy(seq), valid=doc | self.include_special, kinds=["token"] * t,
                                 example=np.zeros(1, dtype=np.int64), attention=np.ones((1, t), dtype=bool),
                                 document=doc, token_ids=seq)
            logits = self.run_with_hooks(inputs, hooks).logits  # (1, T, vocab)
            nxt = int(logits[0, -1].argmax())
            new.append(nxt)
            if eos is not None and nxt == eos:
                break
        return Generation(prompt=prompt, text=self.tokenizer.decode(new, skip_special_tokens=True), token_ids=new)
