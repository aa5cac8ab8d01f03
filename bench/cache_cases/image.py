"""Image case: `sae cache` (timm tiny ViT, last block) vs a bare forward loop over the same
DataLoader/preprocessing (the ceiling: no hooks, no writing)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _loop_seconds(path: Path) -> float:
    """Seconds of the caching loop as logged by run_cache (model loading excluded)."""
    import json

    return json.loads((path / "cache_runs.jsonl").read_text().splitlines()[-1])["seconds"]


def run(args: Any) -> list[dict]:
    from sae_core.caching import run_cache
    from sae_core.datasets import open_dataset
    from sae_core.protocols import AdapterRequest
    from sae_vision.adapters.common import _collate, _Preprocessed
    from sae_vision.adapters.timm import TimmAdapter

    torch.set_num_threads(2)
    n = 128 if args.quick else 768
    model = "vit_small_patch16_224" if args.device.startswith("cuda") else "vit_tiny_patch16_224"
    opts = {"pretrained": "false"} if args.device.startswith("cuda") else {"pretrained": "false", "img_size": "112"}
    request = AdapterRequest(model=model, layers=["-1"], device=args.device, options=opts)
    dataset = open_dataset("samples", "image", n=n)
    adapter = TimmAdapter(request)
    bs = 64
    loader = torch.utils.data.DataLoader(_Preprocessed(dataset, adapter.transform, 0), batch_size=bs, collate_fn=_collate)
    rows = []
    for rep in range(2):  # bare and full alternate twice; the second pair is reported (warm caches)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _, pixels, _ in loader:
                adapter.model.forward_features(pixels.to(args.device))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        bare = n / (time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            path = run_cache("timm", request, "samples", Path(tmp), batch_size=bs, data_options={"n": n}, progress=False)
            full = n / _loop_seconds(path)
        if rep == 1:
            rows.append({"case": "image", "what": f"bare forward ({model})", "items_per_s": bare, "ratio_vs_bare": 1.0})
            rows.append({"case": "image", "what": "sae cache (hooks + store writes)", "items_per_s": full, "ratio_vs_bare": full / bare})
    return rows
