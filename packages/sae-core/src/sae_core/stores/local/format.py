"""On-disk layout of the local store: file names, dtypes and atomic file writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.errors import StoreError
from sae_core.io import TMP_SUFFIX, atomic_write_bytes, atomic_write_json, fsync_dir  # noqa: F401 (re-exported)
from sae_core.protocols.store import DTYPES

METADATA = "metadata.json"
SHARDS = "shards.json"

#: numpy storage dtype per store dtype; bfloat16 is stored as raw 16-bit words
NP_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
}


BLOCKS = "blocks"  # while several ranks write: blocks/plan.json and blocks/block-NNNNN.json
PLAN = "plan.json"


def block_tag(block: int) -> str:
    """What names a block's shard files: ``acts-<tag>-000000.bin``."""
    return f"b{block:05d}"


def _prefix(block: int | None) -> str:
    return "" if block is None else block_tag(block) + "-"


def acts_name(i: int, block: int | None = None) -> str:
    return f"acts-{_prefix(block)}{i:06d}.bin"


def index_name(i: int, block: int | None = None) -> str:
    return f"index-{_prefix(block)}{i:06d}.bin"


def block_list_name(block: int) -> str:
    return f"block-{block:05d}.json"


def np_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise StoreError(f"unsupported store dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return NP_DTYPES[dtype]


def write_bytes_atomic(path: Path, chunks: list[bytes | memoryview]) -> None:
    """Write under a temporary name, fsync, rename (the caller fsyncs the directory once for
    several files): readers never see a partial file."""
    atomic_write_bytes(path, chunks, sync_dir=False)


def write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, sort_keys=True, default=None)


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path.parent} is not an activation cache ({path.name} missing); "
                         "create one with `sae cache`") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise StoreError(f"{path} ({what}) is corrupt: {e}; delete the cache directory and re-run `sae cache`") from None
