"""The sae-vision plugin (entry point ``vision``): ViT adapters and image datasets."""

from __future__ import annotations

from typing import Any

from sae_core import hookimpl


def _clip(request: Any) -> Any:
    from sae_vision.adapters.clip import ClipAdapter

    return ClipAdapter(request)


def _timm(request: Any) -> Any:
    from sae_vision.adapters.timm import TimmAdapter

    return TimmAdapter(request)


@hookimpl
def register_adapters(register: Any) -> None:
    register("clip", _clip, modality="image", description="open_clip ViT image towers (ViT-B-32/openai, ...)")
    register("timm", _timm, modality="image", description="timm Vision Transformers (ViT, DINOv2, SigLIP, ...)")


def _dataset(cls_name: str) -> Any:
    def factory(arg: str | None, **options: Any) -> Any:
        from sae_vision import datasets

        return getattr(datasets, cls_name)(arg, **options)

    return factory


@hookimpl
def register_datasets(register: Any) -> None:
    register("folder", _dataset("FolderDataset"), modality="image", description="Images below a folder (recursive)")
    register("hf", _dataset("HFImageDataset"), modality="image", description="A saved Hugging Face dataset or imagefolder")
    register("samples", _dataset("SampleImages"), modality="image",
             description="Crops of photos shipped with scikit-image/scikit-learn: offline default")
