"""Throughput of `sae cache` against a bare model forward loop (the ceiling), side by side.

    uv run python bench/cache_throughput.py [--case image|text|all]

Each case lives in ``bench/cache_cases/<case>.py`` and exposes ``run(args) -> list[dict]`` rows
with at least ``case``, ``what``, ``items_per_s`` and ``ratio_vs_bare``; the table is printed last.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CASES = ("image", "text")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args()
    rows: list[dict] = []
    for case in CASES if args.case == "all" else (args.case,):
        module = importlib.import_module(f"cache_cases.{case}")
        rows.extend(module.run(args))
    cols = list(dict.fromkeys(k for r in rows for k in r))
    widths = {c: max(len(c), *(len(_fmt(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c, "")).ljust(widths[c]) for c in cols))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


if __name__ == "__main__":
    main()
