"""Label sources for probing, chosen by ``--labels`` (``--option labels=``):

- ``dataset``: the classes the cache's dataset plugin gives its examples — for ``folder:DIR`` the
  first subfolder of each image (``DIR/cat/1.jpg`` → ``cat``); one label per example.
- ``PATH.csv``: a header row with an ``example`` (or ``id``) column of dataset example ids and
  either a ``label`` (or ``labels``) column — several labels of one example separated by ``|``,
  or one row per label — or one 0/1 column per label (wide form).
- ``PATH.jsonl``: one object per example, ``{"example": 7, "label": "cat"}`` or
  ``{"example": 7, "labels": ["cat", "furry"]}`` (``[]``: negative for every label); or, for
  token labels, ``{"example": 7, "tokens": {"number": [3, 4], "name": [9]}}``: the token
  positions (the cache index's ``position``: the token's place in the example/document as the
  cache tokenized it) that carry each label; the other tokens of a listed example are negatives.
- ``regex:PATTERN``: token labels by rule: a token is positive where its string (the cache's
  ``vocab.json``) matches PATTERN (``re.search``); every token the SAE reads is labelled.

Examples a file does not list are not used. Example labels are probed at the example level (a
latent's score is its largest |code| over the example's tokens/patches, over all its cache rows);
token labels at the token level.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sae_core.datasets import open_dataset
from sae_core.errors import SAEError

POS_BITS = 32  # token key = example id << 32 | position


@dataclass
class ExampleLabels:
    """Labels per dataset example: ``y[i, j]`` — example ``examples[i]`` has label ``names[j]``."""

    names: list[str]
    examples: np.ndarray  # (m,) int64 dataset example ids, ascending
    y: np.ndarray  # (m, n_labels) bool
    source: dict[str, Any] = field(default_factory=dict)
    level: str = "example"

    def rows_of(self, example_ids: np.ndarray) -> np.ndarray:
        """Index into ``examples`` of each id (n,), -1 where the example is not labelled."""
        if not len(self.examples):
            return np.full(np.shape(example_ids), -1, dtype=np.int64)
        i = np.searchsorted(self.examples, example_ids).clip(0, len(self.examples) - 1)
        return np.where(self.examples[i] == example_ids, i, -1)


@dataclass
class TokenLabels:
    """Labels per token: by listed positions (``keys`` per label) or by a rule on token strings."""

    names: list[str]
    source: dict[str, Any] = field(default_factory=dict)
    examples: np.ndarray | None = None  # (m,) labelled example ids, ascending (None: every example)
    keys: list[np.ndarray] = field(default_factory=list)  # per label: sorted int64 keys (example << 32 | position)
    vocab_match: np.ndarray | None = None  # (vocab, n_labels) bool: rule labels by token id
    level: str = "token"

    def labelled(self, index: np.ndarray) -> np.ndarray:
        """(n, T) bool: tokens of ``index`` (cache index records) that carry labels."""
        if self.examples is None:
            return np.ones(index.shape, dtype=bool)
        return np.isin(index["example"], self.examples)

    def labels_of(self, index: np.ndarray) -> np.ndarray:
        """(n, T, n_labels) bool labels of the tokens of ``index``."""
        if self.vocab_match is not None:
            tok = index["token"].astype(np.int64)
            ok = (tok >= 0) & (tok < len(self.vocab_match))
            return self.vocab_match[np.where(ok, tok, 0)] & ok[..., None]
        key = (index["example"].astype(np.int64) << POS_BITS) | index["position"].astype(np.int64)
        return np.stack([np.isin(key, k) for k in self.keys], axis=-1)


Labels = ExampleLabels | TokenLabels


def load_labels(spec: str, meta: Any, cache: Path) -> Labels:
    """The labels ``spec`` names (see the module docstring), for a cache with metadata ``meta``."""
    spec = str(spec).strip()
    if not spec:
        raise SAEError("probing needs labels: --labels dataset | PATH.csv | PATH.jsonl | regex:PATTERN")
    if spec == "dataset":
        return _dataset_labels(meta)
    if spec.startswith("regex:"):
        return _regex_labels(spec[len("regex:"):], cache)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise SAEError(f"labels file {spec} does not exist; pass --labels dataset, a CSV/JSONL file or regex:PATTERN")
    if path.suffix.lower() == ".csv":
        return _csv_labels(path)
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return _jsonl_labels(path)
    raise SAEError(f"labels file {path} must be .csv or .jsonl (one JSON object per line)")


def _from_sets(sets: dict[int, set[str]], source: dict[str, Any], names: list[str] | None = None) -> ExampleLabels:
    if not sets:
        raise SAEError(f"no labelled examples in {source.get('path') or source.get('kind')}")
    names = names if names is not None else sorted({n for s in sets.values() for n in s})
    if not names:
        raise SAEError(f"{source.get('path') or source.get('kind')} gives no label names")
    col = {n: j for j, n in enumerate(names)}
    examples = np.array(sorted(sets), dtype=np.int64)
    y = np.zeros((len(examples), len(names)), dtype=bool)
    for i, ex in enumerate(examples):
        for n in sets[int(ex)]:
            y[i, col[n]] = True
    return ExampleLabels(names=names, examples=examples, y=y, source=source)


def _example_id(value: Any, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise SAEError(f"{where}: example id {value!r} is not an integer (the dataset example id, as in the "
                       "cache index and top_examples)") from None


def _csv_labels(path: Path) -> ExampleLabels:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SAEError(f"labels file {path} has no rows (a header row, then one row per example)")
    cols = list(rows[0])
    id_col = next((c for c in ("example", "id", "example_id") if c in cols), None)
    if id_col is None:
        raise SAEError(f"labels file {path}: no 'example' column (columns: {', '.join(cols)})")
    label_col = next((c for c in ("label", "labels") if c in cols), None)
    sets: dict[int, set[str]] = {}
    source = {"kind": "csv", "path": str(path.resolve())}
    if label_col is not None:
        for n, row in enumerate(rows, 2):
            ex = _example_id(row[id_col], f"{path}:{n}")
            sets.setdefault(ex, set()).update(s.strip() for s in (row[label_col] or "").split("|") if s.strip())
        return _from_sets(sets, source)
    names = [c for c in cols if c != id_col]
    for n, row in enumerate(rows, 2):
        ex = _example_id(row[id_col], f"{path}:{n}")
        bad = [c for c in names if (row[c] or "").strip() not in ("0", "1", "true", "false", "")]
        if bad:
            raise SAEError(f"{path}:{n}: column {bad[0]!r} must be 0/1 (or give a 'label' column)")
        sets.setdefault(ex, set()).update(c for c in names if (row[c] or "").strip() in ("1", "true"))
    return _from_sets(sets, {**source, "form": "wide"}, names)


def _jsonl_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            raise SAEError(f"{path}:{n} is not JSON (one object per line)") from None
        if not isinstance(doc, dict) or "example" not in doc:
            raise SAEError(f"{path}:{n}: expected an object with an 'example' key")
        out.append((n, doc))
    if not out:
        raise SAEError(f"labels file {path} is empty")
    return out


def _jsonl_labels(path: Path) -> Labels:
    lines = _jsonl_lines(path)
    source = {"kind": "jsonl", "path": str(path.resolve())}
    if any("tokens" in doc for _, doc in lines):
        return _token_file(path, lines, source)
    sets: dict[int, set[str]] = {}
    for n, doc in lines:
        ex = _example_id(doc["example"], f"{path}:{n}")
        got = doc.get("labels", doc.get("label"))
        got = [] if got is None else got if isinstance(got, list) else [got]
        sets.setdefault(ex, set()).update(str(g) for g in got)
    return _from_sets(sets, source)


def _token_file(path: Path, lines: list[tuple[int, dict[str, Any]]], source: dict[str, Any]) -> TokenLabels:
    per: dict[str, list[int]] = {}
    examples = []
    for n, doc in lines:
        ex = _example_id(doc["example"], f"{path}:{n}")
        toks = doc.get("tokens", {})
        if not isinstance(toks, dict):
            raise SAEError(f'{path}:{n}: "tokens" must map label -> list of token positions')
        examples.append(ex)
        for name, positions in toks.items():
            if not isinstance(positions, list) or not all(isinstance(p, int) and p >= 0 for p in positions):
                raise SAEError(f"{path}:{n}: positions of label {name!r} must be a list of integers >= 0")
            per.setdefault(str(name), []).extend((ex << POS_BITS) | p for p in positions)
    names = sorted(per)
    if not names:
        raise SAEError(f"{path} lists no token labels")
    return TokenLabels(names=names, source={**source, "level": "token"},
                       examples=np.unique(np.array(examples, dtype=np.int64)),
                       keys=[np.unique(np.array(per[n], dtype=np.int64)) for n in names])


def _regex_labels(pattern: str, cache: Path) -> TokenLabels:
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise SAEError(f"regex:{pattern} is not a valid regular expression: {e}") from None
    vocab_path = Path(cache) / "vocab.json"
    if not vocab_path.is_file():
        raise SAEError(f"regex labels need the token strings of a text cache (vocab.json); {cache} has none")
    vocab = json.loads(vocab_path.read_text())
    match = np.array([bool(rx.search(str(t))) for t in vocab], dtype=bool)[:, None]
    return TokenLabels(names=[pattern], source={"kind": "regex", "pattern": pattern}, vocab_match=match)


def _dataset_labels(meta: Any) -> ExampleLabels:
    """The dataset plugin's labels of every example (``label_of(i)`` when the dataset has it,
    which reads no image; else ``dataset[i].label``)."""

    desc = meta.dataset or {}
    if not desc.get("spec"):
        raise SAEError("the cache records no dataset spec; pass --labels FILE.csv/.jsonl")
    modality = desc.get("modality") or ("text" if "token" in meta.token_kinds else "image")
    try:
        ds = open_dataset(desc["spec"], modality, **desc.get("options", {}))
    except SAEError as e:
        raise SAEError(f"cannot open the cache's dataset {desc['spec']} for its labels: {e}") from None
    label_of = getattr(ds, "label_of", None) or (lambda i: ds[i].label)
    sets = {}
    for i in range(len(ds)):
        label = label_of(i)
        if label is not None:
            sets[i] = {str(label)}
    if not sets:
        raise SAEError(f"dataset {desc['spec']} gives its examples no labels (folder: images directly in the "
                       "folder have none); pass --labels FILE.csv/.jsonl")
    return _from_sets(sets, {"kind": "dataset", "spec": desc["spec"]})
