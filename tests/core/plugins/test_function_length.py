"""Issue 24: every function in sae_core fits in about a screen (60 lines), so that a newcomer can
read one step at a time; a longer one is split into named steps.

A function's length runs from its ``def`` line to the end of its body (decorators excluded);
nested functions count within their parent and on their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CORE = ROOT / "packages" / "sae-core" / "src" / "sae_core"
LIMIT = 60


def long_functions(root: Path, limit: int = LIMIT) -> list[tuple[str, int, str, int]]:
    """(file relative to the repository, line of the ``def``, name, lines) of every function
    under ``root`` longer than ``limit`` lines."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    out.append((str(path.relative_to(ROOT)), node.lineno, node.name, length))
    return out


def test_every_sae_core_function_fits_in_sixty_lines() -> None:
    offenders = long_functions(CORE)
    assert not offenders, (
        f"{len(offenders)} function(s) of sae_core are longer than {LIMIT} lines; split each into named steps "
        "(helpers whose docstrings say why):\n"
        + "\n".join(f"  {file}:{line} {name} ({length} lines)" for file, line, name, length in offenders)
    )
