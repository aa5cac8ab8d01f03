"""What a cache is: its metadata (``CacheMetadata``) and the per-token index records.

Shared by every store backend, the adapters' batches and the readers; kept apart so the store and
reader protocols can both import it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STORE_VERSION = 1
DTYPES = ("float32", "float16", "bfloat16")

#: One record per stored token: which source example and position it came from.
INDEX_DTYPE = np.dtype(
    [("example", "<i8"), ("position", "<i4"), ("token", "<i4"), ("valid", "u1")]
)


@dataclass
class CacheMetadata:
    """Contents of ``metadata.json``. ``n_examples``/``complete`` are filled when writing ends."""

    adapter: str
    model: str
    layers: list[str]
    d_model: int
    dtype: str
    tokens_per_example: int
    token_kinds: list[str]
    dataset: dict[str, Any]
    layout: str = "fixed"  # fixed windows (+ `valid` mask in the index)
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = STORE_VERSION
    n_examples: int | None = None
    complete: bool = False

    def identity(self) -> dict[str, Any]:
        """The fields that define *what* was cached (not how far writing got)."""
        return {
            "adapter": self.adapter,
            "model": self.model,
            "layers": self.layers,
            "dtype": self.dtype,
            "tokens_per_example": self.tokens_per_example,
            "token_kinds": self.token_kinds,
            "dataset": self.dataset,
            "extra": self.extra,
            "version": self.version,
        }

    def fingerprint(self) -> str:
        """Content address of the cache: the directory name under the store root."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def n_layers(self) -> int:
        return len(self.layers)
