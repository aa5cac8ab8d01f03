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
``--layers 3`` means ``blocks.3.hook_resid_post``; ``--hook NAME`` takes any hook point.
BOS/CLS/SEP and padding are excluded from training by the index's ``valid`` flag (``--opt
include_special=true`` keeps special tokens).

Running the model with SAEs attached (``run_with_hooks``, ``generate``: the ``downstream``
analysis, ``sae features|steer|ablate``) is in :mod:`sae_text.adapters.running`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sae_core.errors import SAEError
from sae_core.io import atomic_write_json
from sae_core.protocols import ActivationBatch, ActivationSpec, AdapterRequest, Dataset, ModelAdapter

from sae_text.adapters.running import TLensRunning
from sae_text.adapters.windows import SpecialTokens, Window, document_windows
from sae_text.minilm import ALIASES, MODEL_ID, minilm_dir

HOOK_KINDS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out")


def _truthy(v: str | None) -> bool:
    return str(v).lower() in ("1", "true", "yes")


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


class TLensAdapter(TLensRunning, ModelAdapter):
    """Hooks of a transformer_lens HookedTransformer or TransformerBridge."""

    name: ClassVar[str] = "tlens"
    modality: ClassVar[str] = "text"

    def __init__(self, request: AdapterRequest) -> None:
        super().__init__(request)
        self.model, self.kind, self.model_id = load_model(request)
        self.model.eval()
        self.cfg = self.model.cfg
        self.tokenizer = self.model.tokenizer
        if self.tokenizer is None:
            raise SAEError("the model has no tokenizer; pass --opt tokenizer=DIR (a local tokenizer directory)")
        self.hooks = [self._resolve_hook(h) for h in request.layers]
        n_ctx = int(getattr(self.cfg, "n_ctx", 512) or 512)
        self.context = int(request.context_size) if request.context_size is not None else min(128, n_ctx)
        if not 4 <= self.context <= n_ctx:
            raise SAEError(f"--context-size must be between 4 and the model's n_ctx={n_ctx}, got {self.context}")
        self.include_special = _truthy(request.options.get("include_special") or request.options.get("include_bos"))
        mw = request.options.get("max_windows_per_doc")
        self.max_windows = int(mw) if mw else None
        self.special = self._special_tokens()
        self.stop_at = max(int(h.split(".")[1]) for h in self.hooks) + 1

    # -- setup ----------------------------------------------------------------------------------
    def _valid_hooks(self) -> list[str]:
        return [f"blocks.{i}.{k}" for i in range(self.cfg.n_layers) for k in HOOK_KINDS]

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
            sample = ", ".join(valid[: len(HOOK_KINDS)])
            raise SAEError(
                f"unknown hook {raw!r}; valid hooks are blocks.<0..{n - 1}>.<{'|'.join(HOOK_KINDS)}>, e.g. {sample}"
            )
        return raw

    def _special_tokens(self) -> SpecialTokens:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        if getattr(tok, "cls_token_id", None) is not None and getattr(tok, "sep_token_id", None) is not None:
            return SpecialTokens([tok.cls_token_id], [tok.sep_token_id], pad)
        prepend = bool(getattr(self.cfg, "default_prepend_bos", True)) and tok.bos_token_id is not None
        return SpecialTokens([tok.bos_token_id] if prepend else [], [], pad)

    def spec(self) -> ActivationSpec:
        return ActivationSpec(
            adapter=self.name,
            model=self.model_id,
            layers=list(self.hooks),
            d_model=int(self.cfg.d_model),
            tokens_per_example=self.context,
            token_kinds=["token"] * self.context,
            extra={
                "context_size": self.context,
                "loader": self.kind,
                "checkpoint": self.request.checkpoint,
                "options": dict(self.request.options),
                "include_special": self.include_special,
                "max_windows_per_doc": self.max_windows,
                "special_token_ids": sorted(set(self.special.prefix + self.special.suffix)),
                "pad_token_id": self.special.pad,
                "example_unit": "doc",
            },
        )

    def write_extras(self, cache_dir: Path) -> None:
        """``vocab.json``: token strings by id, so viewers show text without the model."""
        path = Path(cache_dir) / "vocab.json"
        if path.exists():
            return
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        atomic_write_json(path, vocab, indent=None)

    # -- activations ----------------------------------------------------------------------------
    def windows(self, dataset: Dataset, start: int) -> Iterator[Window]:
        for doc in range(start, len(dataset)):
            ids = self.tokenizer(dataset[doc].data, add_special_tokens=False)["input_ids"]
            yield from document_windows(doc, ids, self.context, self.special, self.max_windows)

    @torch.inference_mode()
    def forward_windows(self, tokens: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(batch, context) tokens -> (batch, n_hooks, context, d_model) activations."""
        captured: dict[str, torch.Tensor] = {}

        def saver(name: str) -> Any:
            def save(act: torch.Tensor, hook: Any) -> None:
                captured[name] = act  # keyed by the requested name: bridges report canonical names

            return save

        fwd_hooks = [(h, saver(h)) for h in self.hooks]
        kwargs: dict[str, Any] = {"attention_mask": attention, "stop_at_layer": self.stop_at}
        self.model.run_with_hooks(tokens, fwd_hooks=fwd_hooks, return_type=None, **kwargs)
        return torch.stack([captured[h] for h in self.hooks], dim=1)

    def iter_batches(
        self, dataset: Dataset, *, start: int = 0, batch_size: int = 64, num_workers: int = 0
    ) -> Iterator[ActivationBatch]:
        device = torch.device(self.request.device)
        buf: list[Window] = []

        def flush() -> ActivationBatch:
            tokens = torch.from_numpy(np.stack([w.tokens for w in buf])).to(device)
            pad = np.stack([w.pad for w in buf])
            special = np.stack([w.special for w in buf])
            attention = torch.from_numpy(~pad).long().to(device)
            acts = self.forward_windows(tokens, attention)
            valid = ~pad & (self.include_special | ~special)
            batch = ActivationBatch(
                acts=acts,
                example_ids=np.array([w.doc for w in buf], dtype=np.int64),
                token_ids=tokens.cpu().numpy().astype(np.int32),
                valid=valid,
                positions=np.stack([w.positions for w in buf]),
            )
            buf.clear()
            return batch

        for window in self.windows(dataset, start):
            buf.append(window)
            if len(buf) == batch_size:
                yield flush()
        if buf:
            yield flush()
