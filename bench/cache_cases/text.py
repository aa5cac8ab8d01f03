"""Text case: `sae cache` (MiniLM, layer 3, pydocs) vs a bare `run_with_cache` loop over the
same token windows (the ceiling: no masks/index bookkeeping, no writing)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _loop_seconds(path: Path) -> float:
    """Seconds of the caching loop as logged by run_cache (model loading excluded)."""
    import json

    return json.loads((path / "cache_runs.jsonl").read_text().splitlines()[-1])["seconds"]


def run(args: Any) -> list[dict]:
    from sae_core.caching import run_cache
    from sae_core.datasets import open_dataset
    from sae_core.protocols import AdapterRequest
    from sae_text.adapters.tlens import TLensAdapter

    torch.set_num_threads(2)
    docs = 60 if args.quick else 300
    request = AdapterRequest(model="minilm", layers=["3"], context_size=64, device=args.device)
    adapter = TLensAdapter(request)
    dataset = open_dataset("pydocs", "text", limit=docs)
    windows = list(adapter.windows(dataset, 0))
    n_tokens = len(windows) * adapter.context
    bs = 32
    rows = []
    for rep in range(2):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for lo in range(0, len(windows), bs):
                chunk = windows[lo : lo + bs]
                tokens = torch.from_numpy(np.stack([w.tokens for w in chunk])).to(args.device)
                mask = torch.from_numpy(~np.stack([w.pad for w in chunk])).long().to(args.device)
                adapter.model.run_with_cache(tokens, attention_mask=mask, names_filter=["blocks.3.hook_resid_post"])
        bare = n_tokens / (time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            path = run_cache("tlens", request, "pydocs", Path(tmp), batch_size=bs, max_examples=docs, progress=False)
            full = n_tokens / _loop_seconds(path)
        if rep == 1:
            rows.append({"case": "text", "what": "bare run_with_cache (MiniLM)", "items_per_s": bare, "ratio_vs_bare": 1.0})
            rows.append({"case": "text", "what": "sae cache (hooks, masks, store writes)", "items_per_s": full, "ratio_vs_bare": full / bare})
    return rows
