"""``pydocs``: docstrings of the installed Python standard library (and chosen packages).

Real English prose mixed with code, available on every machine with no download: the default
corpus of the offline quickstart. Source files are parsed with :mod:`ast` (nothing is imported,
so no side effects), in sorted path order, docstrings in source order; short and duplicate
docstrings are dropped. ``packages=numpy,requests`` adds installed packages' sources.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Any

from sae_core.datasets import check_options
from sae_core.errors import DataError

from sae_text.datasets.base import TextListDataset

MIN_CHARS = 200


def _roots(packages: list[str]) -> list[tuple[str, Path]]:
    roots = [("stdlib", Path(sysconfig.get_paths()["stdlib"]))]
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"pydocs: package {name!r} is not installed (or is not a package)")
        roots.append((name, Path(next(iter(spec.submodule_search_locations)))))
    return roots


def _docstrings(path: Path) -> list[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_text(errors="replace"))
    except (SyntaxError, ValueError, OSError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= MIN_CHARS:
                out.append(doc)
    return out


def collect(packages: list[str], limit: int | None) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    sources: list[str] = []
    seen: set[str] = set()
    for label, root in _roots(packages):
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if label == "stdlib" and (rel.parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in rel.parts):
                continue
            for doc in _docstrings(path):
                if doc in seen:
                    continue
                seen.add(doc)
                texts.append(doc)
                sources.append(f"{label}/{rel}")
                if limit is not None and len(texts) >= limit:
                    return texts, sources
    return texts, sources


class PyDocsDataset(TextListDataset):
    def __init__(self, packages: list[str], limit: int | None) -> None:
        texts, sources = collect(packages, limit)
        super().__init__("pydocs", texts, sources)
        self.packages = packages
        self.limit = limit

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "packages": self.packages,
            "python": ".".join(map(str, sys.version_info[:3])),
        }


def pydocs_dataset(arg: str | None, **options: Any) -> PyDocsDataset:
    check_options("pydocs", options, {"limit", "seed", "packages", "split"})
    packages = [p for p in str(options.get("packages") or arg or "").split(",") if p.strip()]
    limit = options.get("limit")
    return PyDocsDataset([p.strip() for p in packages], None if limit is None else int(limit))
