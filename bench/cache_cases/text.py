"""Text case: `sae cache --adapter hf` (MiniLM, layer 3, pydocs) vs the bare truncated model.

The ceiling is plain `transformers` doing only the necessary work: MiniLM's ``BertModel`` on the
same token windows, in dataset order, batches of the same size padded to their longest window
(dynamic padding), under ``inference_mode``, the forward cut after block 3 by a hook — no
tokenising (the windows are built beforehand), no masks or index bookkeeping, no writing. Also
measured: the adapter without length-sorting (``sort_batches=1``: what sorting buys), the
untruncated plain model, and `sae cache --adapter tlens` (TransformerBridge) for reference. Throughput counts the
windows' real (non-padding) tokens; each row is the best of
three alternating repetitions (the CI machine is shared), and `sae cache` rows time the caching
loop as logged by run_cache (model loading excluded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAYER = 3
CONTEXT = 64
BATCH = 32


class _Stop(Exception):
    pass


def _loop_seconds(path: Path) -> float:
    import json

    return json.loads((path / "cache_runs.jsonl").read_text().splitlines()[-1])["seconds"]


def _bare(model: Any, windows: list[Any], device: str, truncate: bool) -> float:
    """Seconds of a plain forward loop over ``windows`` (cut after block LAYER if ``truncate``)."""
    handle = None
    if truncate:
        def stop(module: Any, args: Any, output: Any) -> None:
            raise _Stop

        handle = model.encoder.layer[LAYER].register_forward_hook(stop)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            for lo in range(0, len(windows), BATCH):
                chunk = windows[lo : lo + BATCH]
                attention = torch.from_numpy(~np.stack([w.pad for w in chunk]))  # (b, T)
                n = int(attention.sum(1).max())
                tokens = torch.from_numpy(np.stack([w.tokens for w in chunk]))[:, :n].to(device)
                with contextlib.suppress(_Stop):
                    model(input_ids=tokens, attention_mask=attention[:, :n].long().to(device))
    finally:
        if handle is not None:
            handle.remove()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run(args: Any) -> list[dict]:
    from sae_core.caching import run_cache
    from sae_core.datasets import open_dataset
    from sae_core.protocols import AdapterRequest
    from sae_text.adapters.hf import HFAdapter
    from sae_text.minilm import minilm_dir
    from transformers import AutoModel

    torch.set_num_threads(2)
    docs = 60 if args.quick else 300
    request = AdapterRequest(model="minilm", layers=[str(LAYER)], context_size=CONTEXT, device=args.device)
    unsorted = dataclasses.replace(request, options={"sort_batches": "1"})  # what length-sorting buys
    adapter = HFAdapter(request)  # builds the same windows the cache will see
    windows = list(adapter.windows(open_dataset("pydocs", "text", limit=docs), 0))
    n_tokens = int(sum((~w.pad).sum() for w in windows))
    bare_model = AutoModel.from_pretrained(minilm_dir()).eval().to(args.device)
    best: dict[str, float] = {}

    def keep(what: str, seconds: float) -> None:
        best[what] = max(best.get(what, 0.0), n_tokens / seconds)

    for _ in range(1 if args.quick else 3):
        keep("bare", _bare(bare_model, windows, args.device, truncate=True))
        for name, adapter_name, req in (("hf", "hf", request), ("hf-unsorted", "hf", unsorted), ("tlens", "tlens", request)):
            with tempfile.TemporaryDirectory() as tmp:
                path = run_cache(adapter_name, req, "pydocs", Path(tmp), batch_size=BATCH, max_examples=docs, progress=False)
                keep(name, _loop_seconds(path))
        keep("full", _bare(bare_model, windows, args.device, truncate=False))
    bare = best["bare"]
    what = {
        "bare": f"bare truncated forward (transformers, blocks 0-{LAYER})",
        "hf": "sae cache --adapter hf",
        "hf-unsorted": "sae cache --adapter hf --opt sort_batches=1",
        "full": "bare full forward (transformers, all blocks)",
        "tlens": "sae cache --adapter tlens (TransformerBridge)",
    }
    return [{"case": "text", "what": what[k], "items_per_s": best[k], "ratio_vs_bare": best[k] / bare}
            for k in ("bare", "hf", "hf-unsorted", "full", "tlens")]
