"""``hf:ARG``: Hugging Face ``datasets``, read lazily — never loaded into memory.

Three sources, by what ``ARG`` is:

- a directory written by ``save_to_disk``: memory-mapped Arrow, random access (``--split`` picks
  a split of a ``DatasetDict``);
- data files (``.parquet``, ``.jsonl``/``.json``, ``.txt``, ``.csv``, ``.arrow``), one file or a
  folder of them: streamed with ``load_dataset(builder, data_files=..., streaming=True)``;
- anything else is a Hub id, streamed with ``load_dataset(id, name=config, split=...,
  streaming=True)``: nothing is downloaded up front, the cache starts after the first record.

A cache needs its length up front (its progress, its blocks under torchrun, its completeness).
Saved datasets and Parquet files know it; JSON lines and text files are counted by one pass over
their bytes; a Hub dataset's card usually records it. When it is unknown (CSV, Hub datasets
without split sizes), ``--max-examples N`` bounds the stream and becomes the length; a stream
shorter than that ends the cache early, complete. ``--max-examples`` always reads only the first
``N`` records.

The record's ``--field`` is the document: a string (tokenised by the adapter) or a list of token
ids. With no ``--field``, a pretokenised dataset's ``input_ids`` column is used as is (no
re-tokenising; the adapter checks the ids fit the model's vocabulary), else ``text``. Streamed
datasets read front to back (:meth:`StreamedTextDataset.iter_from`; a resumed cache skips the
finished records once); their random access re-reads from the start, and nothing in sae needs it
for text (the viewer reads tokens from the cache).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from sae_core.datasets import check_options
from sae_core.errors import DataError
from sae_core.protocols import Dataset, Example

OPTIONS = {"limit", "seed", "field", "split", "config", "revision"}
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text", ".csv": "csv", ".arrow": "arrow"}
PRETOKENISED = "input_ids"


def hf_text_dataset(arg: str | None, **options: Any) -> Dataset:
    check_options("hf", options, OPTIONS)
    if not arg:
        raise DataError("hf: needs a Hub id, data files or a save_to_disk directory, e.g. --data hf:/data/wiki")
    limit = None if options.get("limit") is None else int(options["limit"])
    if limit is not None and limit < 1:
        raise DataError(f"hf:{arg}: --max-examples must be >= 1, got {limit}")
    path = Path(arg).expanduser()
    if path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json")):
        return ArrowTextDataset(arg, path, options.get("split"), options.get("field"), limit)
    if path.exists():
        return _files_dataset(arg, path, options, limit)
    if arg.startswith((".", "/", "~")) or arg.count("/") > 1 or path.suffix in BUILDERS:
        raise DataError(f"hf:{arg}: no such file or directory")
    return _hub_dataset(arg, options, limit)


def _pick_field(spec: str, columns: list[str], field: str | None) -> str:
    if field:
        if field not in columns:
            raise DataError(f"{spec}: no column {field!r}; columns: {', '.join(columns)}; pass --field NAME")
        return field
    for name in (PRETOKENISED, "text"):
        if name in columns:
            return name
    raise DataError(f"{spec}: no column 'text' or 'input_ids'; columns: {', '.join(columns)}; pass --field NAME")


def _document(value: Any) -> Any:
    """A record's document: text as ``str``, token ids as a list (pretokenised)."""
    return value if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else (
        value.tolist() if hasattr(value, "tolist") else str(value))


class ArrowTextDataset(Dataset):
    """A ``save_to_disk`` directory: memory-mapped Arrow, each document read when asked for."""

    modality: ClassVar[str] = "text"

    def __init__(self, arg: str, path: Path, split: str | None, field: str | None, limit: int | None) -> None:
        super().__init__(f"hf:{arg}" + (f"#{split}" if split else ""))
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise DataError(f"hf:{arg}: not a dataset saved with save_to_disk (or it does not exist)") from None
        if isinstance(ds, datasets.DatasetDict):
            split = split or ("train" if "train" in ds else next(iter(ds)))
            if split not in ds:
                raise DataError(f"hf:{arg}: no split {split!r}; splits: {', '.join(ds)}")
            ds = ds[split]
        self.field = _pick_field(f"hf:{arg}", list(ds.column_names), field)
        self.ds = ds.select_columns([self.field])
        self.n = len(ds) if limit is None else min(len(ds), limit)
        self.limit = limit
        if self.n == 0:
            raise DataError(f"hf:{arg}: the dataset is empty")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return Example(id=index, data=_document(self.ds[index][self.field]))

    def iter_from(self, start: int = 0) -> Iterator[Example]:
        batch = 256  # column slices: one Arrow read per batch instead of one per document
        for lo in range(start, self.n, batch):
            for k, value in enumerate(self.ds[lo : min(self.n, lo + batch)][self.field]):
                yield Example(id=lo + k, data=_document(value))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": "arrow", "field": self.field, "limit": self.limit,
                "pretokenised": self.field == PRETOKENISED}

    def fingerprint(self) -> str:
        key = [self.spec, self.ds._fingerprint, self.field, self.n]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


class StreamedTextDataset(Dataset):
    """Records of a ``datasets`` stream (Hub or local files), read sequentially.

    ``open_stream()`` returns a fresh ``IterableDataset``; ``n`` is the length the cache plans
    for (the stream may end earlier). Random access re-reads from the nearest point: cheap for
    the front-to-back pattern of ``dataset[i], dataset[i + 1], ...``, O(i) otherwise.
    """

    modality: ClassVar[str] = "text"

    def __init__(self, spec: str, open_stream: Callable[[], Any], field: str, n: int, key: list[Any],
                 info: dict[str, Any]) -> None:
        super().__init__(spec)
        self.open_stream, self.field, self.n, self.key, self.info = open_stream, field, n, key, info
        self._cursor: tuple[int, Iterator[Example]] | None = None

    def __len__(self) -> int:
        return self.n

    def iter_from(self, start: int = 0) -> Iterator[Example]:
        if start >= self.n:
            return
        stream = self.open_stream()
        if start:
            stream = stream.skip(start)
        for k, record in enumerate(stream, start):
            if k >= self.n:
                return
            if self.field not in record:
                raise DataError(f"{self.spec}: record {k} has no field {self.field!r} (has {sorted(record)})")
            yield Example(id=k, data=_document(record[self.field]))

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < self.n:
            raise IndexError(index)
        if self._cursor is None or self._cursor[0] != index:
            self._cursor = (index, self.iter_from(index))
        try:
            example = next(self._cursor[1])
        except StopIteration:
            self._cursor = None
            raise IndexError(index) from None
        self._cursor = (index + 1, self._cursor[1])
        return example

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.info, "field": self.field, "pretokenised": self.field == PRETOKENISED}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps([*self.key, self.field, self.n], default=str).encode()).hexdigest()[:16]


def _first_record(spec: str, stream: Any) -> dict[str, Any]:
    for record in stream:
        return record
    raise DataError(f"{spec}: the dataset is empty")


def _files_dataset(arg: str, path: Path, options: dict[str, Any], limit: int | None) -> Dataset:
    import datasets

    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in BUILDERS) if path.is_dir() else [path]
    if not files:
        raise DataError(f"hf:{arg}: the folder has no data files ({', '.join(sorted(BUILDERS))})")
    kinds = {BUILDERS.get(p.suffix) for p in files}
    if None in kinds or len(kinds) > 1:
        raise DataError(f"hf:{arg}: data files must all be one of {', '.join(sorted(BUILDERS))} (got "
            f"{sorted(p.suffix for p in files)[:5]})")
    builder = kinds.pop()
    spec = f"hf:{arg}"

    def open_stream() -> Any:
        return datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train", streaming=True)

    field = _pick_field(spec, list(_first_record(spec, open_stream())), options.get("field"))
    n = _count_rows(builder, files)
    if n is None and limit is None:
        raise DataError(f"{spec}: the number of {builder} records is unknown without reading them all; pass --max-examples N")
    n = limit if n is None else (n if limit is None else min(n, limit))
    key = [spec, [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]]
    return StreamedTextDataset(spec, open_stream, field, n, key, {"source": f"{builder} files (streamed)", "limit": limit})


def _count_rows(builder: str, files: list[Path]) -> int | None:
    """Records in local data files, without parsing them: Parquet footers, newlines of JSON
    lines and text files (one record per non-empty line); ``None`` where that is not possible."""
    if builder == "parquet":
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    if builder in ("json", "text") and all(p.suffix in (".jsonl", ".txt") for p in files):
        total = 0
        for p in files:
            with open(p, "rb") as f:
                total += sum(1 for line in f if line.strip())
        return total
    return None


def _hub_dataset(arg: str, options: dict[str, Any], limit: int | None) -> Dataset:
    import datasets

    split = options.get("split") or "train"
    config, revision = options.get("config"), options.get("revision")
    spec = f"hf:{arg}"

    def open_stream() -> Any:
        try:
            return datasets.load_dataset(arg, name=config, split=split, revision=revision, streaming=True)
        except FileNotFoundError:
            raise DataError(f"{spec}: no such dataset on the Hub (or it is private: set HF_TOKEN)") from None
        except ValueError as e:  # unknown split / config
            raise DataError(f"{spec}: {str(e).strip().splitlines()[0]}") from None
        except ConnectionError as e:
            raise DataError(f"{spec}: cannot reach the Hub ({e}); check your network, or save the dataset locally") from None

    stream = open_stream()
    columns = getattr(stream, "column_names", None) or list(_first_record(spec, stream))
    field = _pick_field(spec, list(columns), options.get("field"))
    known = None
    splits = getattr(getattr(stream, "info", None), "splits", None)
    if splits and split in splits and splits[split].num_examples:
        known = int(splits[split].num_examples)
    if known is None and limit is None:
        raise DataError(f"{spec} streams from the Hub without a known size: pass --max-examples N (the cache needs its length)")
    n = limit if known is None else (known if limit is None else min(known, limit))
    key = [spec, config, split, revision]
    info = {"source": "hub (streamed)", "config": config, "split": split, "revision": revision, "limit": limit}
    return StreamedTextDataset(spec, open_stream, field, n, key, info)
