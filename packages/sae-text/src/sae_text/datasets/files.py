"""``text:PATH`` (a .txt file or a folder of them), ``jsonl:PATH`` and ``json:PATH``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sae_core.datasets import check_options
from sae_core.errors import DataError

from sae_text.datasets.base import TextListDataset


def _require(arg: str | None, name: str) -> Path:
    if not arg:
        raise DataError(f"{name}: needs a path, e.g. --data {name}:/path/to/file")
    path = Path(arg).expanduser()
    if not path.exists():
        raise DataError(f"{name}:{arg}: no such file or directory")
    return path


def decode_text(raw: bytes) -> str | None:
    """``raw`` as UTF-8 text, or None when it is not text (invalid UTF-8, or NUL bytes: binary).

    Such documents are skipped and counted (``Dataset.skipped``), like unreadable images:
    tokenising replacement characters or binary junk would put garbage into the cache silently.
    """
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_dataset(arg: str | None, **options: Any) -> TextListDataset:
    """A .txt file (one document per blank-line-separated paragraph block) or a folder of .txt
    files (one document per file, recursive, sorted). Files (or, in one file, blocks) that are
    not UTF-8 text are skipped and counted."""
    check_options("text", options, {"limit", "seed", "split"})
    path = _require(arg, "text")
    skipped = 0
    texts: list[str] = []
    sources: list[str] = []
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"text:{arg}: the folder has no .txt files")
        for p in files:
            text = decode_text(p.read_bytes())
            if text is None:
                skipped += 1
                continue
            texts.append(text)
            sources.append(str(p.relative_to(path)))
    else:
        for raw in path.read_bytes().split(b"\n\n"):
            if not raw.strip():
                continue
            text = decode_text(raw.strip())
            if text is None:
                skipped += 1
                continue
            sources.append(f"{path.name}#{len(texts)}")
            texts.append(text)
    if skipped and not texts:
        raise DataError(f"text:{arg} holds no UTF-8 text ({skipped} undecodable file(s)/block(s)); "
                        "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    dataset = TextListDataset(f"text:{arg}", texts, sources, limit=options.get("limit"))
    dataset.skipped = skipped
    return dataset


def _field(record: Any, field: str, where: str) -> str:
    if isinstance(record, str):
        return record
    if not isinstance(record, dict) or field not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{where}: record has no field {field!r} (has {keys}); pass --field NAME")
    return str(record[field])


def jsonl_dataset(arg: str | None, **options: Any) -> TextListDataset:
    """One JSON object per line; the text is in ``field`` (default ``text``)."""
    check_options("jsonl", options, {"limit", "seed", "field", "split"})
    path = _require(arg, "jsonl")
    field = options.get("field") or "text"
    limit = options.get("limit")
    texts = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            line = decode_text(raw)
            if line is None:
                raise DataError(f"jsonl:{arg} line {n} is not UTF-8 text; convert the file to UTF-8")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"jsonl:{arg} line {n} is not valid JSON: {e}") from None
            texts.append(_field(record, field, f"jsonl:{arg} line {n}"))
            if limit is not None and len(texts) >= int(limit):
                break
    return TextListDataset(f"jsonl:{arg}", texts, limit=limit)


def json_dataset(arg: str | None, **options: Any) -> TextListDataset:
    """A JSON list of strings (or of objects with ``field``)."""
    check_options("json", options, {"limit", "seed", "field", "split"})
    path = _require(arg, "json")
    text = decode_text(path.read_bytes())
    if text is None:
        raise DataError(f"json:{arg} is not UTF-8 text; convert the file to UTF-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"json:{arg} is not valid JSON: {e}") from None
    if not isinstance(doc, list):
        raise DataError(f"json:{arg} must hold a JSON list of strings, got {type(doc).__name__}")
    field = options.get("field") or "text"
    texts = [_field(r, field, f"json:{arg}[{i}]") for i, r in enumerate(doc)]
    return TextListDataset(f"json:{arg}", texts, limit=options.get("limit"))
