"""Running a language model with callbacks at layers (the text adapters' half of
:mod:`sae_core.protocols.running`): what ``sae features|steer|ablate``, the Python API of
``sae_core.inference``, the viewer's "Your input" page and the ``downstream`` analysis run on.

Inputs are the cache's windows: a text becomes the same [BOS]/[CLS] … [SEP] windows with the same
``valid`` rule (specials only with ``include_special``), so SAEs read the tokens they were trained
on. The output of a causal LM is its logits; of an encoder (BERT-style, MiniLM) the mean-pooled
final hidden state over non-padding tokens (the sentence-transformers embedding). Layers are
handed to the callbacks as cached: batch first, per-head dims flattened to one vector per token.

:class:`TextRunning` holds what both text adapters share (inputs, greedy generation);
:class:`TLensRunning` hooks transformer_lens hook points, :class:`HFRunning` module paths of a
plain ``transformers`` model (:mod:`.taps`).
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sae_core import Dataset, Generation, LayerHook, ModelInputs, ModelOutput, SAEError

from sae_text.adapters.splice import mean_pool
from sae_text.adapters.windows import document_windows

EMBEDDING_NAME = "mean-pooled final hidden state"


def _per_token(fn: LayerHook, valid: torch.Tensor, seq_first: bool) -> Any:
    """``x -> x'`` calling ``fn(acts (b, T, d), valid)`` on a layer's tensor: (T, b, ...) layouts
    transposed to batch first and trailing dims (heads) flattened, as they are cached; the result
    is put back in the tensor's own shape (``x`` itself where ``fn`` returns None)."""

    def apply(act: torch.Tensor) -> torch.Tensor:
        x = act.transpose(0, 1) if seq_first else act
        new = fn(x.reshape(*x.shape[:2], -1), valid)
        if new is None:
            return act
        new = new.reshape(x.shape).to(act.dtype)
        return new.transpose(0, 1) if seq_first else new

    return apply


class TextRunning:
    """Mixin of the text adapters: model inputs from texts or cache rows, and greedy generation.
    Subclasses implement :meth:`is_causal_lm`, :meth:`max_positions` and :meth:`_run`."""

    tokenizer: Any
    context: int
    special: Any
    request: Any
    model_id: str
    window_options: Any
    attention_from_index: Any

    @property
    def include_special(self) -> bool:
        """Whether BOS/CLS/SEP positions are SAE tokens (``--opt include_special``, as cached)."""
        return bool(self.window_options.include_special)

    @abstractmethod
    def is_causal_lm(self) -> bool:
        """Next-token LM (CE is meaningful) vs encoder (BERT-style: compare sentence embeddings)."""

    @abstractmethod
    def max_positions(self) -> int | None:
        """The model's context length (None: unknown)."""

    @abstractmethod
    def _run(self, tokens: torch.Tensor, attention: torch.Tensor, valid: torch.Tensor,
             hooks: Mapping[str, LayerHook], output: bool) -> ModelOutput:
        """One forward with ``hooks`` (tensors on the adapter's device; see ``run_with_hooks``)."""

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
        return self._inputs(index["token"].astype(np.int64), index["valid"].astype(bool), self.attention_from_index(index),
                            index["position"].astype(np.int64), index["example"][:, 0].astype(np.int64))

    def _inputs(self, tokens: np.ndarray, valid: np.ndarray, attention: np.ndarray, positions: np.ndarray,
                example: np.ndarray, labels: bool = False) -> ModelInputs:
        return ModelInputs(
            data=torch.from_numpy(tokens), valid=valid, kinds=["token"] * tokens.shape[1], example=example,
            attention=attention, document=(positions >= 0) & attention, positions=positions, token_ids=tokens,
            labels=[self.tokenizer.convert_ids_to_tokens(row.tolist()) for row in tokens] if labels else None,
        )

    # -- running ------------------------------------------------------------------------------------
    @torch.no_grad()
    def run_with_hooks(self, inputs: ModelInputs, hooks: Mapping[str, LayerHook], *, output: bool = True) -> ModelOutput:
        device = torch.device(self.request.device)
        tokens = torch.as_tensor(inputs.data).long().to(device)  # (b, T)
        attention = torch.from_numpy(np.asarray(inputs.attention, dtype=bool)).long().to(device)
        valid = torch.from_numpy(np.asarray(inputs.valid, dtype=bool)).to(device)
        return self._run(tokens, attention, valid, hooks, output)

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
        n_ctx = int(self.max_positions() or 0)
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


class TLensRunning(TextRunning):
    """``TLensAdapter``'s runner: transformer_lens ``run_with_hooks`` on hook points."""

    model: Any
    cfg: Any
    kind: str
    seq_first: dict[str, bool]
    _resolve_hook: Any
    _probe_shapes: Any
    _stop_at: Any

    def is_causal_lm(self) -> bool:
        if self.kind == "hooked":
            return getattr(self.cfg, "attention_dir", "causal") != "bidirectional"
        hf = getattr(self.model, "original_model", None)
        return bool(getattr(getattr(hf, "config", None), "is_decoder", False)) or type(hf).__name__.endswith(
            ("ForCausalLM", "LMHeadModel")
        )

    def max_positions(self) -> int | None:
        return int(getattr(self.cfg, "n_ctx", 0) or 0) or None

    def _seq_first(self, name: str) -> bool:
        """Whether hook point ``name`` runs (pos, batch, ...); probed (and refused unless it is one
        vector per token) the first time a hook this adapter was not built for is asked for."""
        if name not in self.seq_first:
            from sae_text.adapters.text_base import PROBE_LENGTHS, not_per_token_message, per_token_layout

            shapes = self._probe_shapes([name], self._stop_at([name]))[name]
            if len(shapes) < len(PROBE_LENGTHS):
                raise SAEError(f"hook {name!r} does not run in a forward of this model; pick another hook")
            layout = per_token_layout(name, shapes)
            if layout is None:
                raise SAEError(not_per_token_message(name, shapes))
            self.seq_first[name] = layout[0]
        return self.seq_first[name]

    def _run(self, tokens: torch.Tensor, attention: torch.Tensor, valid: torch.Tensor,
             hooks: Mapping[str, LayerHook], output: bool) -> ModelOutput:
        names = [self._resolve_hook(layer) for layer in hooks]
        fwd = []
        for name, fn in zip(names, hooks.values(), strict=True):
            apply = _per_token(fn, valid, self._seq_first(name))
            fwd.append((name, lambda act, hook, apply=apply: apply(act)))
        if not output:
            if fwd:  # up to the last hooked block (the whole model for hooks outside the blocks)
                self.model.run_with_hooks(tokens, fwd_hooks=fwd, return_type=None, attention_mask=attention,
                                          stop_at_layer=self._stop_at(names))
            return ModelOutput()
        if self.is_causal_lm():
            logits = self.model.run_with_hooks(tokens, fwd_hooks=fwd, return_type="logits", attention_mask=attention)
            return ModelOutput(kind="lm", logits=logits)  # (b, T, vocab)
        captured: dict[str, torch.Tensor] = {}

        def keep(act: torch.Tensor, hook: Any) -> None:
            captured["x"] = act

        last = f"blocks.{self.cfg.n_layers - 1}.hook_resid_post"
        self.model.run_with_hooks(tokens, fwd_hooks=[*fwd, (last, keep)], return_type=None, attention_mask=attention)
        return ModelOutput(kind="embedding", embedding=mean_pool(captured["x"], attention), embedding_name=EMBEDDING_NAME)


class HFRunning(TextRunning):
    """``HFAdapter``'s runner: forward hooks replacing the chosen modules' tensors (:mod:`.taps`);
    without output the forward stops after the last hooked module."""

    model: Any
    causal: bool
    model_class: str
    taps: Any
    seq_first: dict[Any, bool]
    resolve_layer: Any
    _call: Any
    _splice_forward: Any

    def is_causal_lm(self) -> bool:
        return bool(self.causal)

    def max_positions(self) -> int | None:
        from sae_text.adapters.hf_model import max_positions

        return max_positions(self.model.config)

    def _learn_layouts(self, taps: list[Any], tokens: torch.Tensor, attention: torch.Tensor) -> None:
        """Whether each of ``taps`` this adapter was not built for runs (pos, batch, ...), from one
        forward on these inputs; a tap that is not one vector per token is refused."""
        new = [t for t in taps if t not in self.seq_first]
        if not new:
            return
        from sae_text.adapters.taps import Taps

        got = Taps(self.model, new).run(lambda: self._call(tokens, attention))
        b, n = tokens.shape
        for tap in new:
            shape = tuple(got[tap].shape)
            if len(shape) < 3 or shape[:2] not in ((b, n), (n, b)):
                raise SAEError(f"hook {tap.name!r} does not give one vector per token (its output is {shape}); "
                               "pick another hook (`sae hooks` lists the usable ones)")
            self.seq_first[tap] = shape[:2] != (b, n)

    def _run(self, tokens: torch.Tensor, attention: torch.Tensor, valid: torch.Tensor,
             hooks: Mapping[str, LayerHook], output: bool) -> ModelOutput:
        from sae_text.adapters.taps import Taps

        taps_of = {self.resolve_layer(layer): fn for layer, fn in hooks.items()}
        taps = self.taps if all(t in self.taps.modules for t in taps_of) else Taps(self.model, list(taps_of))
        self._learn_layouts(list(taps_of), tokens, attention)
        with contextlib.ExitStack() as stack:
            for tap, fn in taps_of.items():
                stack.enter_context(taps.replacing(tap, _per_token(fn, valid, self.seq_first[tap])))
            if not output:
                if taps_of:  # cut after the last hooked module (the replacing hooks run first)
                    Taps(self.model, list(taps_of)).run(lambda: self._call(tokens, attention))
                return ModelOutput()
            if self.is_causal_lm():
                return ModelOutput(kind="lm", logits=self._call(tokens, attention).logits)  # (b, T, vocab)
            return ModelOutput(kind="embedding", embedding=self._splice_forward(tokens, attention),
                               embedding_name=EMBEDDING_NAME)
