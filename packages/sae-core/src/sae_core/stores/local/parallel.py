"""Several ranks writing one local cache (``torchrun ... -m sae_core cache``).

Rank 0 fixes a *plan* before anyone writes: the examples still to cache are cut into contiguous
blocks (one per rank at the first launch), saved in ``blocks/plan.json``. Rank ``r`` of a world
of ``w`` writes blocks ``r, r + w, ...``, each with its own shard list; blocks resume like a
single-process cache. Because the plan is fixed at the first launch, a relaunch with another
number of ranks (1 included) deals the same blocks out differently and still finishes the same
cache. When every block is complete, rank 0 merges their shard lists, in example order, into
``shards.json`` (the commit point), marks the cache complete and drops ``blocks/``: the result is
an ordinary cache whose rows are exactly those a single process writes.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

from sae_core.errors import StoreError
from sae_core.protocols.store import CacheMetadata
from sae_core.stores.local import format as fmt
from sae_core.stores.local.writer import ensure_metadata, verified_shards, write_metadata


def split_range(start: int, stop: int, n: int) -> list[tuple[int, int]]:
    """[start, stop) in ``n`` contiguous, nearly equal, non-empty pieces (fewer if too short)."""
    size = stop - start
    n = max(1, min(n, size))
    bounds = [start + size * i // n for i in range(n + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def plan_blocks(
    root: str | Path, meta: CacheMetadata, n_examples: int, n_blocks: int
) -> list[tuple[int, int]] | None:
    """Rank 0, before any block writer opens: the cache's blocks (created now, or read back).

    Examples a single process already cached (an interrupted plain ``sae cache``) are kept and
    only the rest is split. Returns None when the cache is already complete.
    """
    path = Path(root) / meta.fingerprint()
    path.mkdir(parents=True, exist_ok=True)
    if ensure_metadata(path, meta):
        return None
    plan_path = path / fmt.BLOCKS / fmt.PLAN
    if plan_path.exists():
        plan = fmt.read_json(plan_path, "parallel cache plan")
        if int(plan["n_examples"]) != n_examples:
            raise StoreError(
                f"{path} was planned for {plan['n_examples']} examples but the dataset now has {n_examples}; "
                "the dataset changed — use another --out root or delete that directory"
            )
        return [(int(a), int(b)) for a, b in plan["blocks"]]
    start, shards = 0, []
    if (path / fmt.SHARDS).exists():  # a single process got this far: keep its shards
        shards = verified_shards(path, meta, fmt.read_json(path / fmt.SHARDS, "shard list").get("shards", []))
        fmt.write_json_atomic(path / fmt.SHARDS, {"shards": shards})
        start = int(shards[-1]["last_example"]) + 1 if shards else 0
    # no writer runs yet: drop what an interrupted writer left (temporary or unlisted shard files)
    listed = {name for s in shards for name in (s["file"], s["index_file"])}
    for f in path.iterdir():
        if f.name.endswith(fmt.TMP_SUFFIX) or (f.suffix == ".bin" and f.name not in listed):
            f.unlink()
    blocks = split_range(start, n_examples, n_blocks)
    (path / fmt.BLOCKS).mkdir(exist_ok=True)
    fmt.write_json_atomic(plan_path, {"n_examples": n_examples, "start": start, "blocks": blocks})
    return blocks


def merge_blocks(root: str | Path, meta: CacheMetadata) -> Path:
    """Rank 0, once every block writer closed: one ``shards.json``, the cache marked complete."""
    path = Path(root) / meta.fingerprint()
    if ensure_metadata(path, meta):
        return path
    plan = fmt.read_json(path / fmt.BLOCKS / fmt.PLAN, "parallel cache plan")
    shards = fmt.read_json(path / fmt.SHARDS, "shard list").get("shards", []) if (path / fmt.SHARDS).exists() else []
    shard_rows = None
    for b in range(len(plan["blocks"])):
        doc_path = path / fmt.BLOCKS / fmt.block_list_name(b)
        doc = fmt.read_json(doc_path, "block shard list") if doc_path.exists() else {}
        if not doc.get("complete"):
            raise StoreError(
                f"block {b} of {path} is not finished; re-run the same torchrun command to finish it"
            )
        shards += doc["shards"]
        shard_rows = doc.get("shard_rows", shard_rows)
    if not shards:
        raise StoreError(f"no activations were written to {path}; the dataset produced no examples")
    row = 0
    for shard in shards:
        shard["first_row"] = row
        row += int(shard["n_examples"])
    fmt.write_json_atomic(path / fmt.SHARDS, {"shard_rows": shard_rows, "shards": shards})
    write_metadata(path, meta, complete=True, n_rows=row)
    shutil.rmtree(path / fmt.BLOCKS)
    return path
