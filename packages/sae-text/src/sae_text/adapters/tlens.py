"""``tlens``: residual-stream (or any hook) activations of language models via transformer_lens.

Model resolution (``--model``):
- ``minilm``: the bundled all-MiniLM-L6-v2 (offline) through TransformerBridge (its hub id
  ``sentence-transformers/all-MiniLM-L6-v2``, which caches record as the model, also resolves to
  the bundled copy when it is installed);
- a local directory: a Hugging Face model loaded with ``TransformerBridge.boot_transformers``;
- ``config:FILE.json``: a randomly initialised HookedTransformer from a HookedTransformerConfig
  (seeded; tokenizer from ``--opt tokenizer=DIR``) — tests and random baselines;
- a name transformer_lens knows (``gpt2``, ``pythia-70m``, ...): ``HookedTransformer.from_pretrained``;
- any other name: a Hugging Face model id through ``TransformerBridge.boot_transformers``.
``--layers 3`` means ``blocks.3.hook_resid_post``; ``--hook NAME`` takes any hook point of the
model's own hook list (``model.hook_dict``: ``blocks.3.attn.hook_z``, ``blocks.3.mlp.hook_post``,
``blocks.3.attn.hook_q``, ...), with a close-match suggestion for typos. Hooks with per-head dims
(``hook_z``, ``hook_q/k/v``: (batch, pos, n_heads, d_head)) are flattened to ``n_heads * d_head``
per token; hooks that are not one vector per token (``hook_pattern``, ``hook_attn_scores``:
(batch, heads, pos, pos)) are refused. Hooks that a HookedTransformer only runs when a flag is on
(``hook_result``, ``hook_q_input``, ``hook_attn_in``, ``hook_mlp_in``) switch their flag on.
BOS/CLS/SEP and padding are excluded from training by the index's ``valid`` flag (``--opt
include_special=true`` keeps special tokens).

Running the model with SAEs attached (``run_with_hooks``, ``make_inputs``, ``cached_inputs``,
``generate``: ``sae_core.inference``, ``sae features|steer|ablate``, the ``downstream`` analysis)
is :class:`~sae_text.adapters.running.TLensRunning`: next-token logits for causal LMs, the
mean-pooled sentence embedding for encoders (BERT-style, MiniLM). ``splice_eval`` (with
``source=``) splices transcoders for the ``downstream`` analysis, ``spliced_forward`` is the
differentiable forward of end-to-end training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sae_core.errors import SAEError
from sae_core.protocols import ActivationSpec, AdapterRequest, Dataset, Unembedding

from sae_text.adapters.options import WINDOW_OPTIONS, WindowOptions, check_known
from sae_text.adapters.running import TLensRunning
from sae_text.adapters.splice import (
    MODES,
    SpliceScores,
    mean_pool,
    next_token_nll,
    per_token,
    replace_per_token,
)
from sae_text.adapters.text_base import (
    PROBE_BATCH,
    PROBE_LENGTHS,
    TextAdapter,
    common_width,
    not_per_token_message,
    per_token_layout,
)
from sae_text.adapters.windows import SpecialTokens, body_size
from sae_text.minilm import ALIASES, MODEL_ID, minilm_dir

TLENS_OPTIONS: dict[str, str] = {
    **WINDOW_OPTIONS,
    "tokenizer": "local tokenizer directory (config: models)",
    "bridge": "true: load names transformer_lens knows through TransformerBridge instead of HookedTransformer",
}

#: hooks a HookedTransformer only runs with a flag on, and the setter that turns it on
FLAGGED_HOOKS = {
    "attn.hook_result": "set_use_attn_result",
    "hook_q_input": "set_use_split_qkv_input",
    "hook_k_input": "set_use_split_qkv_input",
    "hook_v_input": "set_use_split_qkv_input",
    "hook_attn_in": "set_use_attn_in",
    "hook_mlp_in": "set_use_hook_mlp_in",
}


def _truthy(v: str | None) -> bool:
    return str(v).lower() in ("1", "true", "yes", "on")


def load_model(request: AdapterRequest) -> tuple[Any, str, str]:
    """(model, kind, canonical model id); kind is "hooked" or "bridge"."""
    name = request.model
    device = request.device
    if name in ALIASES or (name == MODEL_ID and _bundled_minilm()):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return _bridge(str(minilm_dir()), device), "bridge", MODEL_ID
    if name.startswith("config:"):
        return _from_config(Path(name[len("config:") :]), request), "hooked", name
    if Path(name).expanduser().is_dir():
        return _bridge(str(Path(name).expanduser()), device), "bridge", str(Path(name).expanduser().resolve())
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    known = name in OFFICIAL_MODEL_NAMES or any(name in v for v in MODEL_ALIASES.values())
    if known and not _truthy(request.options.get("bridge")):
        try:
            model = HookedTransformer.from_pretrained(name, device=device)
        except OSError as e:
            raise SAEError(f"could not download {name!r} ({e}); check your network or HF_TOKEN, or pass a local directory") from None
        if request.checkpoint:
            model.load_state_dict(_load_weights(request.checkpoint, device))
        return model, "hooked", name
    return _bridge(name, device), "bridge", name


def _load_weights(path: str, device: str) -> dict[str, torch.Tensor]:
    """A ``--checkpoint`` state dict: tensors only (``weights_only=True``), never pickled code."""
    import pickle

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise SAEError(f"--checkpoint {path} is not a state dict of tensors torch can load safely "
                       f"({' '.join(str(e).split())[:200]}); save it with torch.save(model.state_dict(), path)") from None


def _bundled_minilm() -> bool:
    try:
        minilm_dir()
    except SAEError:
        return False
    return True


def _bridge(name: str, device: str) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(name, device=device)
    except OSError as e:
        raise SAEError(f"could not load model {name!r} ({e}); pass a local model directory or a valid Hugging Face id") from None


def _from_config(path: Path, request: AdapterRequest) -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if not path.is_file():
        raise SAEError(f"config file {path} does not exist")
    cfg = HookedTransformerConfig(**json.loads(path.read_text()))
    torch.manual_seed(int(request.options.get("seed", 0)))
    tok = None
    if request.options.get("tokenizer"):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(request.options["tokenizer"])
    model = HookedTransformer(cfg, tokenizer=tok)
    if request.checkpoint:
        model.load_state_dict(_load_weights(request.checkpoint, "cpu"))
    return model.to(request.device, print_details=False)


class TLensAdapter(TLensRunning, TextAdapter):
    """Hooks of a transformer_lens HookedTransformer or TransformerBridge."""

    name: ClassVar[str] = "tlens"
    splice_sources: ClassVar[bool] = True  # splice_eval(source=...): transcoders

    def __init__(self, request: AdapterRequest) -> None:
        check_known("tlens", request.options, TLENS_OPTIONS)  # before the model loads
        window_options = WindowOptions.parse(request.options)
        super().__init__(request, window_options)
        self.model, self.kind, self.model_id = load_model(request)
        self.model.eval()
        self.cfg = self.model.cfg
        self.tokenizer = self.model.tokenizer
        if self.tokenizer is None:
            raise SAEError("the model has no tokenizer; pass --opt tokenizer=DIR (a local tokenizer directory)")
        n_ctx = int(getattr(self.cfg, "n_ctx", 512) or 512)
        self.context = int(request.context_size) if request.context_size is not None else min(128, n_ctx)
        if not 4 <= self.context <= n_ctx:
            raise SAEError(f"--context-size must be between 4 and the model's n_ctx={n_ctx}, got {self.context}")
        self.special = self._special_tokens()
        body_size(self.context, self.special)
        self.vocab_size = int(self.cfg.d_vocab)
        self.hooks = [self._resolve_hook(h) for h in request.layers]
        self.layer_names = list(self.hooks)
        self.stop_at = self._stop_at(self.hooks)
        self.seq_first: dict[str, bool] = {}
        self.d_model = self._probe(self.hooks) if self.hooks else int(self.cfg.d_model)

    def unembedding(self) -> Unembedding:
        """``W_U`` and ``ln_final`` of a causal HookedTransformer, or a bridged causal LM's head
        (``logit-effects``); encoders (MiniLM) have none."""
        from sae_text.adapters.unembed import tlens_unembedding

        return tlens_unembedding(self.model, self.kind, causal=self.is_causal_lm())

    # -- setup ----------------------------------------------------------------------------------
    def _valid_hooks(self) -> list[str]:
        return list(self.model.hook_dict)

    def _resolve_hook(self, raw: str) -> str:
        n = self.cfg.n_layers
        try:
            i = int(raw)
        except ValueError:
            i = None
        if i is not None:
            if not -n <= i < n:
                raise SAEError(f"layer {i} is out of range: the model has {n} blocks (0..{n - 1}, or -1..-{n})")
            return f"blocks.{i % n}.hook_resid_post"
        valid = self._valid_hooks()
        if raw not in valid:
            import difflib

            close = difflib.get_close_matches(raw, valid, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "e.g. blocks.0.hook_resid_post"
            raise SAEError(f"unknown hook {raw!r}: {hint} (`sae hooks --adapter tlens --model M` lists the "
                           f"{len(valid)} hook points of this model)")
        for suffix, setter in FLAGGED_HOOKS.items():
            if raw.endswith(suffix) and not self._switch_on(setter):
                raise SAEError(f"hook {raw!r} needs {setter}(True), which this model does not support; pick another hook")
        return raw

    def _switch_on(self, setter: str) -> bool:
        """Turn a hook flag on (``set_use_attn_result`` ...); False when the model cannot."""
        try:
            getattr(self.model, setter)(True)
        except (AttributeError, NotImplementedError, ValueError, AssertionError):
            return False
        return True

    def _stop_at(self, hooks: list[str]) -> int | None:
        """Blocks to run: up to the last hooked block; hooks outside the blocks need the full forward."""
        stops = []
        for h in hooks:
            parts = h.split(".")
            stops.append(int(parts[1]) + 1 if parts[0] == "blocks" and len(parts) > 2 and parts[1].isdigit() else None)
        return None if not stops or None in stops else max(stops)

    def _probe_tokens(self, length: int) -> torch.Tensor:
        body = [(7 + 13 * i) % self.vocab_size for i in range(length - len(self.special.prefix))]
        return torch.tensor([(self.special.prefix + body)[:length]] * PROBE_BATCH, device=self.request.device)

    @torch.inference_mode()
    def _probe_shapes(self, hooks: list[str], stop_at: int | None) -> dict[str, list[tuple[int, ...]]]:
        shapes: dict[str, list[tuple[int, ...]]] = {h: [] for h in hooks}
        for length in PROBE_LENGTHS:
            tokens = self._probe_tokens(length)
            captured: dict[str, torch.Tensor] = {}
            try:
                self.model.run_with_hooks(tokens, fwd_hooks=[(h, _keyed(h, captured)) for h in hooks],
                                          return_type=None, stop_at_layer=stop_at)
            except (ValueError, AssertionError) as e:  # a hook the model refuses (a flag it cannot turn on)
                raise SAEError(f"transformer_lens refused a hook: {str(e).strip().splitlines()[0]}") from None
            for h in hooks:
                if h in captured:
                    shapes[h].append(tuple(captured[h].shape))
        return shapes

    def _probe(self, hooks: list[str]) -> int:
        """Two short forwards: every hook must fire and be one vector per token; returns the width."""
        widths = {}
        for h, s in self._probe_shapes(list(dict.fromkeys(hooks)), self.stop_at).items():
            if len(s) < len(PROBE_LENGTHS):
                raise SAEError(f"hook {h!r} does not run in a forward of this model (a flag such as use_attn_result "
                               "may be off); pick another hook")
            layout = per_token_layout(h, s)
            if layout is None:
                raise SAEError(not_per_token_message(h, s))
            self.seq_first[h], widths[h] = layout
        return common_width(widths)

    def hook_names(self) -> list[str]:
        """Hook points of the model's own hook list that give one vector per token in a forward
        (with every flag-gated hook switched on, as requesting one does)."""
        unsupported = {setter for setter in dict.fromkeys(FLAGGED_HOOKS.values()) if not self._switch_on(setter)}
        names = [h for h in self._valid_hooks()
                 if not any(h.endswith(suffix) and setter in unsupported for suffix, setter in FLAGGED_HOOKS.items())]
        shapes = self._probe_shapes(names, None)
        return [h for h in names if len(shapes[h]) == len(PROBE_LENGTHS) and per_token_layout(h, shapes[h]) is not None]

    def _special_tokens(self) -> SpecialTokens:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        if getattr(tok, "cls_token_id", None) is not None and getattr(tok, "sep_token_id", None) is not None:
            return SpecialTokens([tok.cls_token_id], [tok.sep_token_id], pad)
        prepend = bool(getattr(self.cfg, "default_prepend_bos", True)) and tok.bos_token_id is not None
        return SpecialTokens([tok.bos_token_id] if prepend else [], [], pad)

    def spec(self) -> ActivationSpec:
        if not self.hooks:
            raise SAEError("no layers given; pass --layers 3 (a block index) or --hook NAME")
        return ActivationSpec(
            adapter=self.name,
            model=self.model_id,
            layers=list(self.hooks),
            d_model=self.d_model,
            tokens_per_example=self.context,
            token_kinds=["token"] * self.context,
            extra={**self.spec_extra(), "loader": self.kind},
        )

    # -- activations ----------------------------------------------------------------------------
    @torch.inference_mode()
    def forward_windows(self, tokens: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(batch, length) tokens -> (batch, n_hooks, length, d_model) activations."""
        captured: dict[str, torch.Tensor] = {}
        fwd_hooks = [(h, _keyed(h, captured)) for h in dict.fromkeys(self.hooks)]
        kwargs: dict[str, Any] = {"attention_mask": attention, "stop_at_layer": self.stop_at}
        self.model.run_with_hooks(tokens, fwd_hooks=fwd_hooks, return_type=None, **kwargs)
        acts = []
        for h in self.hooks:
            x = captured[h].transpose(0, 1) if self.seq_first[h] else captured[h]
            acts.append(x.reshape(*x.shape[:2], -1))  # (batch, length, width): heads flattened
        return torch.stack(acts, dim=1)

    # -- downstream of transcoders (SAEs: TLensRunning.run_with_hooks); end-to-end training --------
    @torch.inference_mode()
    def splice_eval(
        self,
        index: np.ndarray,
        mask: np.ndarray,
        layer: str,
        replace: Callable[[torch.Tensor], torch.Tensor],
        *,
        dataset: Dataset | None = None,
        batch_rows: int = 8,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Downstream effect of replacing hook ``layer``'s activations at ``mask`` (n, T) by
        ``replace(acts[mask])`` on the cached windows ``index`` (the tokens are in the index);
        with ``source`` (a transcoder), by ``replace`` of hook ``source``'s activations at the same
        tokens in the same forward.

        Causal LMs: mean next-token CE over targets that are document tokens (never BOS/CLS/SEP
        or padding), clean / spliced / zero-ablated (the same positions set to 0), and
        ``ce_loss_recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean)``. Encoders: cosine
        between the mean-pooled final hidden states (the sentence embedding of sentence
        transformers) with and without the splice, and with zero ablation as a baseline.
        ``replace`` is called once per chunk of ``batch_rows`` rows, in row order.
        """
        hook_name = self._resolve_hook(layer)
        seq_first = self.seq_first.get(hook_name, False)
        src_name = self._resolve_hook(source) if source is not None else None
        if src_name is not None and src_name not in self.seq_first:
            self._probe([src_name])  # its layout (a hook this adapter was not built with)
        device = torch.device(self.request.device)
        causal = self.is_causal_lm()
        attention_all = self.attention_from_index(index)
        scores = SpliceScores(causal)
        for lo in range(0, len(index), batch_rows):
            rows = slice(lo, lo + batch_rows)
            tokens = torch.from_numpy(index["token"][rows].astype(np.int64)).to(device)
            m = torch.from_numpy(mask[rows].astype(bool)).to(device)
            attention = torch.from_numpy(attention_all[rows]).long().to(device)

            seen: dict[str, torch.Tensor] = {}  # the source hook's activation in this forward
            outputs = {}
            for mode in MODES:
                hooks = [] if mode == "clean" else [
                    (hook_name, self._splice_hook(mode, m, replace, seq_first, seen, src_name, source=source, layer=layer))]
                if src_name is not None and mode == "spliced":
                    hooks.insert(0, (src_name, _keyed("src", seen)))
                outputs[mode] = self._splice_output(tokens, attention, hooks, causal)
            scores.add(outputs, index["position"][rows])
        return scores.result()

    def _splice_hook(self, mode: str, m: torch.Tensor, replace: Callable[[torch.Tensor], torch.Tensor], seq_first: bool,
                     seen: dict[str, torch.Tensor], src_name: str | None, *, source: str | None, layer: str
                     ) -> Callable[..., torch.Tensor]:
        """The hook at ``layer`` for ``mode`` (spliced or zero-ablated) of one chunk, ``m`` its
        (rows, T) mask. A transcoder's spliced hook reads its input from ``seen``, where the
        source hook put it earlier in the same forward; a source that runs later is an error."""
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            src = None
            if src_name is not None and mode == "spliced":
                if "src" not in seen:
                    raise SAEError(f"hook {source!r} does not run before {layer!r} in a forward, so a transcoder "
                                   "from it cannot be spliced in at that hook")
                src = per_token(seen.pop("src"), self.seq_first[src_name])
            return replace_per_token(act, m, mode, replace, seq_first=seq_first, source=src)

        return fn

    def _splice_output(self, tokens: torch.Tensor, attention: torch.Tensor, hooks: list[tuple[str, Any]], causal: bool
                       ) -> torch.Tensor:
        """One forward with ``hooks``, reduced to what the splice is measured on: per-token
        next-token NLL (causal LMs) or the mean-pooled last residual stream (encoders: the sentence
        embedding of sentence transformers)."""
        if causal:
            logits = self.model.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits", attention_mask=attention)
            return next_token_nll(logits, tokens)
        last = f"blocks.{self.cfg.n_layers - 1}.hook_resid_post"
        captured: dict[str, torch.Tensor] = {}
        self.model.run_with_hooks(tokens, fwd_hooks=[*hooks, (last, _keyed("x", captured))], return_type=None,
                                  attention_mask=attention)
        return mean_pool(captured["x"], attention)


    def spliced_forward(self, index: np.ndarray, mask: np.ndarray, layer: str,
                        replace: Callable[[torch.Tensor], torch.Tensor] | None, *, output: str = "logits") -> torch.Tensor:
        """The whole model on the windows ``index`` with gradients on, hook ``layer``'s activations at
        ``mask`` replaced by ``replace(...)``: logits (causal LMs) or the last block's residual stream
        (see ModelAdapter.spliced_forward); for end-to-end training."""
        if output == "logits" and not self.is_causal_lm():
            raise SAEError("this model is not a causal LM: it has no next-token logits; use the final hidden states "
                           "(--e2e mse)")
        hook_name = self._resolve_hook(layer)
        seq_first = self.seq_first.get(hook_name, False)
        device = torch.device(self.request.device)
        tokens = torch.from_numpy(index["token"].astype(np.int64)).to(device)
        attention = torch.from_numpy(self.attention_from_index(index)).long().to(device)
        m = torch.from_numpy(np.asarray(mask, dtype=bool)).to(device)

        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return replace_per_token(act, m, "spliced", replace, seq_first=seq_first)

        hooks = [(hook_name, fn)] if replace is not None else []
        if output == "logits":
            return self.model.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits", attention_mask=attention)
        captured: dict[str, torch.Tensor] = {}
        last = f"blocks.{self.cfg.n_layers - 1}.hook_resid_post"
        self.model.run_with_hooks(tokens, fwd_hooks=[*hooks, (last, _keyed("x", captured))], return_type=None,
                                  attention_mask=attention)
        return captured["x"]


def _keyed(key: str, captured: dict[str, torch.Tensor]) -> Callable[..., None]:
    """A transformer_lens hook saving its activation under ``key`` (the requested name: bridges
    report canonical names, not the aliases users type)."""

    def save(act: torch.Tensor, hook: Any) -> None:
        captured[key] = act

    return save
