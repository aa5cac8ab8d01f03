"""``activation-db``: every firing of every latent over the analysed tokens, on disk, by latent.

Written by the shared pass (:mod:`sae_core.analyses.shared_pass`) into ``<checkpoint>/activations/``
and read with :func:`sae_core.open_activation_db` (``sae query``, ``quantile-examples``). Why a
database: top examples, quantile bands, random samples and "which latents fire here" are all
views of the same sparse matrix (tokens × latents); keeping the matrix means no view has to
re-encode the cache, and new views need no new pass.

Layout (``.npy`` files, memory-mappable, never pickled; see docs/analyses.md)::

    activations/
      manifest.json                 written last: without it the directory is not a database
      shard-00000.offsets.npy       (d_sae + 1,) int64: latent l's firings are [offsets[l], offsets[l+1])
      shard-00000.token.npy         (nnz,) uint32: token number - the shard's first token, ascending per latent
      shard-00000.value.npy         (nnz,) float32 (or float16: --option db_dtype=float16): signed codes
      shard-00000.slot.npy          (nnz,) uint16: the firing's column in its cache row (int32 past 65536)
      shard-00000.tokens.npy        (n_tok,) TOKEN_DTYPE: row, slot, position, example, token_id per token
      shard-00000.rows.npy          (n_row,) ROW_DTYPE: row, example, first token of each cache row
      shard-00000.row_tokens.npy    (n_row, T) int32: token ids of whole rows (text caches only)

Each shard holds a contiguous range of token numbers (whole cache rows). Memory while writing:
the buffered firings of one shard (``--option db_shard_entries=``, 4M firings, 64 MB), then they
are sorted by latent and written. The directory is built under a staging name and renamed into
place when complete (:func:`sae_core.io.staged_dir`), with the manifest written last inside it.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import numpy as np

from sae_core import (
    AnalysisContext,
    CodeChunk,
    CodeConsumer,
    PassAnalysis,
    SAEError,
    atomic_open,
    atomic_write_json,
    filenames,
    staged_dir,
)
from sae_core.analyses.common import descriptive_side, option
from sae_core.analyses.top_examples import example_meta

DB_FORMAT, DB_VERSION = "sae-activation-db", 1
#: one record per analysed token: its cache row, column in the row (slot), position in the
#: source example (-1 for special tokens), example id, token id (-1 for images)
TOKEN_DTYPE = np.dtype([("row", "<i8"), ("slot", "<i4"), ("position", "<i4"), ("example", "<i8"), ("token_id", "<i4")])
#: one record per analysed cache row: its number, example id, and its first token number
ROW_DTYPE = np.dtype([("row", "<i8"), ("example", "<i8"), ("first_token", "<i8")])
SHARD_ENTRIES = 1 << 22
VALUE_DTYPES = ("float32", "float16")


class ActivationDBAnalysis(PassAnalysis):
    """Feature activation database: every latent's firings over the analysed tokens (``sae query``)."""

    name: ClassVar[str] = "activation-db"
    options: ClassVar[tuple[str, ...]] = ("split", "max_tokens", "db_dtype", "db_shard_entries")

    def consumer(self, ctx: AnalysisContext) -> CodeConsumer:
        dtype = option(ctx, "db_dtype", "float32", str)
        if dtype not in VALUE_DTYPES:
            raise SAEError(f"--option db_dtype= must be one of {', '.join(VALUE_DTYPES)}, got {dtype!r}")
        return ActivationDBWriter(ctx, option(ctx, "db_shard_entries", SHARD_ENTRIES, int, "positive"), dtype)


def _save_npy(path: Any, array: np.ndarray) -> None:

    with atomic_open(path, "wb", sync_dir=False) as f:  # the stage directory is fsynced once, at the end
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


class ActivationDBWriter:
    """The database's writer: buffers a shard's firings, sorts them by latent, writes the shard."""

    def __init__(self, ctx: AnalysisContext, shard_entries: int = SHARD_ENTRIES, value_dtype: str = "float32") -> None:

        self.ctx, self.shard_entries, self.value_dtype = ctx, shard_entries, np.dtype(value_dtype)
        self.d_sae = ctx.sae.d_sae
        self.text = "token" in ctx.reader.meta.token_kinds
        self.slot_dtype = np.uint16 if ctx.reader.meta.tokens_per_example <= 2**16 else np.int32
        self._stack = contextlib.ExitStack()
        self.stage = self._stack.enter_context(staged_dir(ctx.checkpoint / filenames.ACTIVATION_DB_DIR, replace=True))
        self.shards: list[dict[str, Any]] = []
        self.n_tokens = self.n_rows = 0
        self._reset(0)

    def _reset(self, first_token: int) -> None:
        self.lo = first_token  # the shard's first token number
        self.buf: dict[str, list[np.ndarray]] = {k: [] for k in ("token", "latent", "value", "slot", "tokens", "rows",
                                                                  "row_tokens")}
        self.nnz = 0

    def update(self, chunk: CodeChunk) -> None:
        keep = chunk.keep.cpu().numpy()  # (n, T)
        r, slot = np.nonzero(keep)  # row-major: the order of the chunk's token numbers
        index = chunk.index
        tokens = np.empty(len(r), dtype=TOKEN_DTYPE)
        tokens["row"], tokens["slot"] = chunk.rows[r], slot
        tokens["position"], tokens["example"], tokens["token_id"] = (
            index["position"][r, slot], index["example"][r, slot], index["token"][r, slot])
        rows = np.empty(len(chunk.rows), dtype=ROW_DTYPE)
        rows["row"], rows["example"] = chunk.rows, index["example"][:, 0]
        rows["first_token"] = chunk.first_token + np.concatenate([[0], np.cumsum(keep.sum(1))[:-1]])
        b = self.buf
        b["token"].append(chunk.token.cpu().numpy())
        b["latent"].append(chunk.latent.cpu().numpy().astype(np.int32))
        b["value"].append(chunk.value.cpu().numpy().astype(self.value_dtype))
        b["slot"].append(chunk.slot.cpu().numpy().astype(self.slot_dtype))
        b["tokens"].append(tokens)
        b["rows"].append(rows)
        if self.text:
            b["row_tokens"].append(np.ascontiguousarray(index["token"], dtype=np.int32))
        self.nnz += len(chunk.token)
        self.n_tokens += chunk.n_tokens
        self.n_rows += len(chunk.rows)
        if self.nnz >= self.shard_entries:
            self._flush()

    def _flush(self) -> None:
        b = self.buf
        if not b["rows"]:
            return
        name = f"shard-{len(self.shards):05d}"
        token = np.concatenate(b["token"]) - self.lo  # (nnz,) ascending
        latent = np.concatenate(b["latent"])
        order = np.argsort(latent, kind="stable")  # by latent; tokens stay ascending within a latent
        counts = np.bincount(latent, minlength=self.d_sae)
        offsets = np.zeros(self.d_sae + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        n_tok = self.n_tokens - self.lo
        local = np.uint32 if n_tok < 2**32 else np.int64
        files = {"offsets": offsets, "token": token[order].astype(local), "value": np.concatenate(b["value"])[order],
                 "slot": np.concatenate(b["slot"])[order],
                 "tokens": np.concatenate(b["tokens"]), "rows": np.concatenate(b["rows"])}
        if self.text:
            files["row_tokens"] = np.concatenate(b["row_tokens"])
        for key, array in files.items():
            _save_npy(self.stage / f"{name}.{key}.npy", array)
        self.shards.append({"name": name, "tokens": [self.lo, self.n_tokens], "nnz": len(token),
                            "n_rows": len(files["rows"])})
        self._reset(self.n_tokens)

    def finish(self) -> dict[str, Any]:

        self._flush()
        ctx = self.ctx
        manifest = {
            "format": DB_FORMAT, "version": DB_VERSION, "d_sae": self.d_sae, "n_tokens": self.n_tokens,
            "n_rows": self.n_rows, "nnz": sum(s["nnz"] for s in self.shards), "split": descriptive_side(ctx),
            "value_dtype": self.value_dtype.name, "row_tokens": self.text, "shards": self.shards, **example_meta(ctx),
        }
        atomic_write_json(self.stage / filenames.ACTIVATION_DB_MANIFEST, manifest)  # last: the database is complete
        self._stack.close()  # rename the staging directory into place
        return {"split": manifest["split"], "n_rows": self.n_rows, "n_tokens": self.n_tokens, "nnz": manifest["nnz"],
                "shards": len(self.shards), "path": str(ctx.checkpoint / filenames.ACTIVATION_DB_DIR)}

    def abort(self) -> None:
        """Drop the staging directory (the pass failed): the old database, if any, stays."""
        err = RuntimeError("analysis pass failed")
        self._stack.__exit__(RuntimeError, err, None)
