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


def text_dataset(arg: str | None, **options: Any) -> TextListDataset:
    """A .txt file (one document per blank-line-separated paragraph block) or a folder of .txt
    files (one document per file, recursive, sorted)."""
    check_options("text", options, {"limit", "seed", "split"})
    path = _require(arg, "text")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"text:{arg}: the folder has no .txt files")
        texts = [p.read_text(errors="replace") for p in files]
        sources = [str(p.relative_to(path)) for p in files]
    else:
        blocks = [b.strip() for b in path.read_text(errors="replace").split("\n\n")]
        texts = [b for b in blocks if b]
        sources = [f"{path.name}#{i}" for i in range(len(texts))]
    return TextListDataset(f"text:{arg}", texts, sources, limit=options.get("limit"))


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
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
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
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"json:{arg} is not valid JSON: {e}") from None
    if not isinstance(doc, list):
        raise DataError(f"json:{arg} must hold a JSON list of strings, got {type(doc).__name__}")
    field = options.get("field") or "text"
    texts = [_field(r, field, f"json:{arg}[{i}]") for i, r in enumerate(doc)]
    return TextListDataset(f"json:{arg}", texts, limit=options.get("limit"))
