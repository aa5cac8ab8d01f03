"""``hf``: activations of any Hugging Face ``transformers`` model, read by PyTorch forward hooks.

No wrapper around the model: its own forward runs under ``torch.inference_mode`` with hooks on
the chosen modules, and stops after the last of them (:mod:`.taps`), so caching block 3 of
MiniLM costs the embeddings and four blocks. This is the fast path for caching (a
TransformerBridge forward does the same work at about a third of the speed on CPU, see
docs/benchmarks.md) and the one that reaches modules transformer_lens does not name.

- ``--layers 3``: the output of block 3 of the model's stack of blocks (its longest
  ``nn.ModuleList``: ``encoder.layer``, ``model.layers``, ``transformer.h``, ...); negative
  indices count from the end. Caches record the module path (``encoder.layer.3``).
- ``--hook PATH``: the output of any module of ``model.named_modules()``
  (``model.layers.12.mlp``, ``encoder.layer.3.attention.output``), ``PATH:input`` for its input.
  Several hooks run in one forward (a transcoder's input and output, later). Outputs with
  extra dims are flattened per token; hooks that are not one vector per token are refused.
- ``sae hooks --adapter hf --model M`` lists the modules that give one vector per token.

Windows, masks, positions and the cache layout are those of ``tlens`` (:mod:`.text_base`):
the same analyses, viewer and downstream evaluation work on both. Options (``--opt``):
``model_class`` (an ``AutoModel*`` class), ``dtype`` (float32, bfloat16, float16),
``revision``, ``trust_remote_code``, ``prepend_bos`` and the window options of
:mod:`.options`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from sae_core.errors import SAEError
from sae_core.protocols import ActivationSpec, AdapterRequest, Dataset, Unembedding

from sae_text.adapters.hf_model import DTYPES, find_blocks, load, max_positions, resolve_source
from sae_text.adapters.options import WINDOW_OPTIONS, WindowOptions, check_known, parse_bool
from sae_text.adapters.running import HFRunning
from sae_text.adapters.splice import (
    MODES,
    SpliceScores,
    mean_pool,
    next_token_nll,
    per_token,
    replace_per_token,
    splice_key,
)
from sae_text.adapters.taps import Tap, Taps
from sae_text.adapters.text_base import (
    PROBE_BATCH,
    PROBE_LENGTHS,
    TextAdapter,
    common_width,
    not_per_token_message,
    per_token_layout,
    special_tokens_of,
)
from sae_text.adapters.windows import body_size

HF_OPTIONS: dict[str, str] = {
    **WINDOW_OPTIONS,
    "model_class": "transformers Auto class to load with (default: AutoModelForCausalLM for causal LMs, else AutoModel)",
    "dtype": f"weights and activations dtype: {', '.join(DTYPES)} (default float32)",
    "revision": "Hub revision (branch, tag or commit)",
    "trust_remote_code": "true: allow the model repo's own code",
    "prepend_bos": "true/false: put BOS before each window when the tokenizer adds no special tokens (default true)",
}


def _parse_hf_options(options: dict[str, str]) -> dict[str, Any]:
    check_known("hf", options, HF_OPTIONS)
    model_class = options.get("model_class") or None
    if model_class is not None and not (model_class.startswith("AutoModel") and model_class.isidentifier()):
        raise SAEError(f"--opt model_class= must be a transformers AutoModel* class, e.g. AutoModel, got {model_class!r}")
    dtype = options.get("dtype", "float32")
    if dtype not in DTYPES:
        raise SAEError(f"--opt dtype= must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return {
        "model_class": model_class,
        "dtype": dtype,
        "revision": options.get("revision") or None,
        "trust_remote_code": parse_bool("trust_remote_code", options.get("trust_remote_code", "false")),
        "prepend_bos": parse_bool("prepend_bos", options["prepend_bos"]) if "prepend_bos" in options else None,
    }


class HFAdapter(HFRunning, TextAdapter):
    """Forward hooks on module paths of a plain ``transformers`` model; runs it with SAEs attached
    through :class:`~sae_text.adapters.running.HFRunning`."""

    name: ClassVar[str] = "hf"
    splice_sources: ClassVar[bool] = True  # splice_eval(source=...): transcoders

    def __init__(self, request: AdapterRequest) -> None:
        hf_opts = _parse_hf_options(request.options)  # every option checked before the model loads
        window_options = WindowOptions.parse(request.options)
        if request.context_size is not None and request.context_size < 4:
            raise SAEError(f"--context-size must be at least 4, got {request.context_size}")
        resolve_source(request.model)
        super().__init__(request, window_options)
        import transformers

        if hf_opts["model_class"] and not hasattr(transformers, hf_opts["model_class"]):
            raise SAEError(f"transformers has no class {hf_opts['model_class']!r}; e.g. AutoModel, AutoModelForCausalLM")
        loaded = load(request.model, model_class=hf_opts["model_class"], dtype=hf_opts["dtype"],
                      revision=hf_opts["revision"], trust_remote_code=hf_opts["trust_remote_code"],
                      device=request.device, checkpoint=request.checkpoint)
        self.model, self.tokenizer, self.model_id = loaded.model, loaded.tokenizer, loaded.model_id
        self.model_class, self.causal = loaded.model_class, loaded.causal
        config = self.model.config
        self.forward_kwargs: dict[str, Any] = {"use_cache": False} if hasattr(config, "use_cache") else {}
        n_pos = max_positions(config)
        self.context = int(request.context_size or min(128, n_pos or 128))
        if n_pos is not None and self.context > n_pos:
            raise SAEError(f"--context-size must be at most the model's {n_pos} positions, got {self.context}")
        self.special = special_tokens_of(self.tokenizer, prepend_bos=hf_opts["prepend_bos"])
        try:
            body_size(self.context, self.special)
        except ValueError as e:
            raise SAEError(f"{e}; pass a larger --context-size") from None
        self.vocab_size = int(self.model.get_input_embeddings().num_embeddings)
        self.taps_wanted = [self.resolve_layer(raw) for raw in request.layers]
        self.layer_names = [t.name for t in self.taps_wanted]
        self.taps = Taps(self.model, self.taps_wanted)
        self.seq_first: dict[Tap, bool] = {}
        self.splice_memo: dict[str, torch.Tensor] = {}
        self.d_model = self._probe() if self.taps_wanted else int(getattr(config, "hidden_size", 0) or 0)

    # -- setup -----------------------------------------------------------------------------------
    def resolve_layer(self, raw: str) -> Tap:
        """``3`` / ``-1`` -> the output of that block; anything else is a module path (``:input``)."""
        try:
            i = int(raw)
        except ValueError:
            return Tap.parse(raw)
        path, blocks = find_blocks(self.model)
        n = len(blocks)
        if not -n <= i < n:
            raise SAEError(f"layer {i} is out of range: {path} has {n} blocks (0..{n - 1}, or -1..-{n})")
        return Tap(f"{path}.{i % n}")

    def _probe_tokens(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        words = self.tokenizer("sparse features of the residual stream", add_special_tokens=False)["input_ids"] or [0]
        body = [words[i % len(words)] for i in range(length - len(self.special.prefix))]
        ids = (self.special.prefix + body)[:length]
        tokens = torch.tensor([ids] * PROBE_BATCH, device=self.request.device)
        return tokens, torch.ones_like(tokens)

    def _call(self, tokens: torch.Tensor, attention: torch.Tensor, **extra: Any) -> Any:
        return self.model(input_ids=tokens, attention_mask=attention, **self.forward_kwargs, **extra)

    @torch.inference_mode()
    def _probe(self) -> int:
        """Run two short forwards: validate that every hook fires and is one vector per token, and
        fix each hook's layout; returns the common width."""
        shapes: dict[Tap, list[tuple[int, ...]]] = {t: [] for t in self.taps.taps}
        for length in PROBE_LENGTHS:
            tokens, attention = self._probe_tokens(length)
            for tap, x in self.taps.run(lambda t=tokens, a=attention: self._call(t, a)).items():
                shapes[tap].append(tuple(x.shape))
        widths = {}
        for tap, s in shapes.items():
            layout = per_token_layout(tap.name, s)
            if layout is None:
                raise SAEError(not_per_token_message(tap.name, s))
            self.seq_first[tap], widths[tap.name] = layout
        return common_width(widths)

    def spec(self) -> ActivationSpec:
        if not self.layer_names:
            raise SAEError("no layers given; pass --layers 3 (a block index) or --hook MODULE.PATH")
        return ActivationSpec(
            adapter=self.name, model=self.model_id, layers=list(self.layer_names), d_model=self.d_model,
            tokens_per_example=self.context, token_kinds=["token"] * self.context,
            extra={**self.spec_extra(), "loader": self.model_class, "causal": self.causal},
        )

    def unembedding(self) -> Unembedding:
        """The LM head and final norm of a causal LM (``logit-effects``); encoders have none."""
        from sae_text.adapters.unembed import hf_unembedding

        return hf_unembedding(self.model, causal=self.is_causal_lm())

    def hook_names(self) -> list[str]:
        """Module paths whose output is one vector per token (what ``--hook`` accepts and an SAE
        can train on), in the model's module order; found by one short forward."""
        taps = Taps(self.model, [Tap(name) for name, _ in self.model.named_modules() if name])
        shapes: dict[Tap, list[tuple[int, ...]]] = {}
        with torch.inference_mode():
            for length in PROBE_LENGTHS:
                tokens, attention = self._probe_tokens(length)
                captured = taps.run(lambda t=tokens, a=attention: self._call(t, a), stop=False, require_all=False)
                for tap, x in captured.items():
                    shapes.setdefault(tap, []).append(tuple(x.shape))
        return [t.name for t in taps.taps if len(shapes.get(t, [])) == len(PROBE_LENGTHS)
                and per_token_layout(t.name, shapes[t]) is not None]

    # -- activations -----------------------------------------------------------------------------
    @torch.inference_mode()
    def forward_windows(self, tokens: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(batch, length) -> (batch, n_layers, length, d_model), the forward cut after the last hook."""
        got = self.taps.run(lambda: self._call(tokens, attention))
        acts = []
        for tap in self.taps_wanted:
            x = got[tap].transpose(0, 1) if self.seq_first[tap] else got[tap]
            acts.append(x.reshape(*x.shape[:2], -1))  # (batch, length, width)
        return torch.stack(acts, dim=1)

    # -- downstream (spliced) evaluation ---------------------------------------------------------
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
        """Downstream effect of replacing hook ``layer``'s per-token activations at ``mask``
        (n, T) by ``replace(acts[mask])`` on the cached windows ``index`` (tokens from the index):
        next-token CE clean / spliced / zero-ablated for causal LMs, cosine of the mean-pooled
        final hidden state for encoders (see :mod:`.splice`). ``replace`` is called once per
        chunk of ``batch_rows`` rows, in row order. ``source`` (a transcoder): ``replace`` reads
        that module's activations at the same tokens, taken in the same forward."""
        tap = self.resolve_layer(layer)
        src = self.resolve_layer(source) if source is not None else None
        needed = [tap] if src is None else [tap, src]
        taps = self.taps if all(t in self.taps.modules for t in needed) else Taps(self.model, needed)
        seq_first = self.seq_first.get(tap, False)
        device = torch.device(self.request.device)
        attention_all = self.attention_from_index(index)
        scores = SpliceScores(self.causal)
        for lo in range(0, len(index), batch_rows):
            rows = slice(lo, lo + batch_rows)
            tokens = torch.from_numpy(index["token"][rows].astype(np.int64)).to(device)
            m = torch.from_numpy(mask[rows].astype(bool)).to(device)
            attention = torch.from_numpy(attention_all[rows]).long().to(device)
            outputs = {}
            for mode in MODES:
                key = splice_key(tap.name, mode, index[rows], mask[rows])
                if key in self.splice_memo:  # clean and zero-ablated runs are the same for every SAE of a layer
                    outputs[mode] = self.splice_memo[key]
                    continue
                out = self._splice_run(mode, tokens, attention, m, taps, tap, src, replace, seq_first,
                                       source=source, layer=layer)
                outputs[mode] = out
                if key is not None:
                    self.splice_memo[key] = out
            scores.add(outputs, index["position"][rows])
        return scores.result()

    def _splice_run(self, mode: str, tokens: torch.Tensor, attention: torch.Tensor, m: torch.Tensor, taps: Taps,
                    tap: Tap, src: Tap | None, replace: Callable[[torch.Tensor], torch.Tensor], seq_first: bool, *,
                    source: str | None, layer: str) -> torch.Tensor:
        """One forward of one chunk in ``mode``: clean, or with module ``tap``'s per-token outputs at
        ``m`` (rows, T) spliced or zero-ablated. A transcoder's spliced run watches module ``src``
        in the same forward and hands its activations to ``replace``; a source that runs after
        ``tap`` is an error."""
        if mode == "clean":
            return self._splice_forward(tokens, attention)
        seen: dict[Tap, torch.Tensor] = {}  # the source module's activation in this forward

        def fn(x: torch.Tensor) -> torch.Tensor:
            from_src = None
            if src is not None and mode == "spliced":
                if src not in seen:
                    raise SAEError(f"module {source!r} does not run before {layer!r} in a forward, so a "
                                   "transcoder from it cannot be spliced in there")
                from_src = per_token(seen.pop(src), self.seq_first.get(src, False))
            return replace_per_token(x, m, mode, replace, seq_first=seq_first, source=from_src)

        with contextlib.ExitStack() as stack:
            if src is not None and mode == "spliced":
                stack.enter_context(taps.watching(src, seen))
            stack.enter_context(taps.replacing(tap, fn))
            return self._splice_forward(tokens, attention)

    def spliced_forward(self, index: np.ndarray, mask: np.ndarray, layer: str,
                        replace: Callable[[torch.Tensor], torch.Tensor] | None, *, output: str = "logits") -> torch.Tensor:
        """The whole model on the windows ``index`` with gradients on, module ``layer``'s per-token
        outputs at ``mask`` replaced by ``replace(...)``: logits (causal LMs) or the final hidden
        states (see ModelAdapter.spliced_forward); for end-to-end training."""
        import contextlib

        if output == "logits" and not self.causal:
            raise SAEError(f"{self.model_id} is not a causal LM: it has no next-token logits; use the final hidden "
                           "states (--e2e mse)")
        tap = self.resolve_layer(layer)
        taps = self.taps if tap in self.taps.modules else Taps(self.model, [tap])
        seq_first = self.seq_first.get(tap, False)
        device = torch.device(self.request.device)
        tokens = torch.from_numpy(index["token"].astype(np.int64)).to(device)
        attention = torch.from_numpy(self.attention_from_index(index)).long().to(device)
        m = torch.from_numpy(np.asarray(mask, dtype=bool)).to(device)
        swap = (taps.replacing(tap, lambda x: replace_per_token(x, m, "spliced", replace, seq_first=seq_first))
                if replace is not None else contextlib.nullcontext())
        with swap:
            if output == "logits":
                return self._call(tokens, attention).logits
            out = self._call(tokens, attention, output_hidden_states=True)
            return out.hidden_states[-1]

    def _splice_forward(self, tokens: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(b, T-1) next-token NLLs (causal LMs) or (b, d) mean-pooled final hidden states."""
        if self.causal:
            return next_token_nll(self._call(tokens, attention).logits, tokens)
        out = self._call(tokens, attention, output_hidden_states=self.model_class != "AutoModel")
        hidden = getattr(out, "last_hidden_state", None)
        return mean_pool(hidden if hidden is not None else out.hidden_states[-1], attention)
