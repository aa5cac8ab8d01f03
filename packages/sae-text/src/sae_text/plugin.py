"""The sae-text plugin (entry point ``text``): the ``hf`` and ``tlens`` adapters, text datasets, quickstart."""

from __future__ import annotations

from typing import Any

from sae_core import hookimpl


def _adapter(request: Any) -> Any:
    from sae_text.adapters.tlens import TLensAdapter

    return TLensAdapter(request)


def _hf_adapter(request: Any) -> Any:
    from sae_text.adapters.hf import HFAdapter

    return HFAdapter(request)


@hookimpl
def register_adapters(register: Any) -> None:
    register("tlens", _adapter, modality="text",
             description="Language models via transformer_lens (HookedTransformer, TransformerBridge, MiniLM)")
    register("hf", _hf_adapter, modality="text",
             description="Any Hugging Face transformers model (MiniLM, local or Hub): forward hooks on module paths")


def _lazy(module: str, func: str) -> Any:
    def factory(arg: str | None, **options: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), func)(arg, **options)

    return factory


@hookimpl
def register_datasets(register: Any) -> None:
    register("text", _lazy("sae_text.datasets.files", "text_dataset"), modality="text",
             description="A .txt file (blank-line separated documents) or a folder of .txt files")
    register("jsonl", _lazy("sae_text.datasets.files", "jsonl_dataset"), modality="text",
             description="JSON lines; --field picks the text (default: text)")
    register("json", _lazy("sae_text.datasets.files", "json_dataset"), modality="text",
             description="A JSON list of strings (or objects with --field)")
    register("hf", _lazy("sae_text.datasets.hf", "hf_text_dataset"), modality="text",
             description="A Hugging Face dataset saved with save_to_disk (--split, --field)")
    register("pydocs", _lazy("sae_text.datasets.pydocs", "pydocs_dataset"), modality="text",
             description="Docstrings of the installed Python stdlib (+ packages=a,b): offline default")


@hookimpl
def register_commands(app: Any) -> None:
    from sae_text.quickstart import register

    register(app)
