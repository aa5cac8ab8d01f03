"""Loading a Hugging Face model for the ``hf`` adapter, and finding its blocks.

``--model`` is ``minilm`` (the bundled all-MiniLM-L6-v2, offline; its hub id resolves to the
bundled copy too), a local directory written by ``save_pretrained``, or a Hub id. The class is
chosen from the config's ``architectures``: causal LMs load with ``AutoModelForCausalLM`` (the
``downstream`` analysis needs their logits; caching stops long before the head), everything else
with ``AutoModel`` (``--opt model_class=AutoModelForMaskedLM`` etc. overrides).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sae_core.errors import SAEError
from torch import nn

from sae_text.minilm import ALIASES, MODEL_ID, minilm_dir

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    model_id: str  # what caches record: the hub id, or the resolved local path
    model_class: str
    causal: bool


def resolve_source(name: str) -> tuple[str, str]:
    """(what ``from_pretrained`` gets, the canonical model id); no file or network access
    beyond checking local paths, so bad names fail before anything loads."""
    if name in ALIASES or (name == MODEL_ID and _bundled_minilm()):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(minilm_dir()), MODEL_ID
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SAEError(f"{name} is a directory without config.json; pass a directory written by save_pretrained")
        return str(path), str(path.resolve())
    if path.exists() or name.startswith((".", "/", "~")) or not HUB_ID.match(name):
        raise SAEError(f"--model {name!r} is neither a model directory nor a Hugging Face id (org/name)")
    return name, name


def _bundled_minilm() -> bool:
    try:
        minilm_dir()
    except SAEError:
        return False
    return True


def load(name: str, *, model_class: str | None, dtype: str, revision: str | None, trust_remote_code: bool,
         device: str, checkpoint: str | None) -> LoadedModel:
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    source, model_id = resolve_source(name)
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except OSError as e:
        raise SAEError(f"could not load the config of {name!r} ({_first_line(e)}); check the id, your network "
                       "or HF_TOKEN, or pass a local directory") from None
    except ValueError as e:
        raise SAEError(f"{name!r}: {_first_line(e)}") from None
    causal = any(a.endswith(CAUSAL_SUFFIXES) for a in (config.architectures or [])) or bool(
        getattr(config, "is_decoder", False))
    model_class = model_class or ("AutoModelForCausalLM" if causal else "AutoModel")
    factory = getattr(transformers, model_class)
    try:
        model = factory.from_pretrained(source, config=config, dtype=getattr(torch, dtype), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as e:
        raise SAEError(f"could not load {name!r} ({_first_line(e)}); check the id, your network or HF_TOKEN") from None
    except ValueError as e:  # e.g. a config the chosen Auto class does not map
        raise SAEError(f"{model_class} cannot load {name!r}: {_first_line(e)}; pass --opt model_class=AutoModel") from None
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise SAEError(f"--checkpoint {checkpoint} does not exist")
        if checkpoint.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(checkpoint)
        else:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(model.state_dict()):
            raise SAEError(f"--checkpoint {checkpoint} does not fit {name!r} (unexpected keys {unexpected[:3]})")
    model.eval().to(device)
    return LoadedModel(model, tokenizer, model_id, model_class, causal and model_class != "AutoModel")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's stack of blocks: its longest ``nn.ModuleList`` that is not inside another
    list's element (so a MoE layer's 64 experts never beat 24 layers); ties go to the first."""
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    paths = {name for name, _ in lists}

    def nested(name: str) -> bool:
        parts = name.split(".")
        return any(".".join(parts[:i]) in paths and parts[i].isdigit() for i in range(1, len(parts)))

    top = [(name, m) for name, m in lists if not nested(name)]
    if not top:
        raise SAEError(f"{type(model).__name__} has no list of blocks (nn.ModuleList); pass --hook MODULE.PATH instead")
    return max(top, key=lambda item: len(item[1]))


def max_positions(config: Any) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
