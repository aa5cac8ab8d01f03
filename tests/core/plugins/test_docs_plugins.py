"""docs/plugins.md is a tutorial whose code is the example plugin's, verbatim.

Every fenced block of the tutorial that starts with a comment naming a file of the repository
(``# tests/example_plugin/src/sae_example_plugin/shapes.py``) must equal that file; the example
plugin itself is run end to end by tests/core/plugins/test_example_plugin_e2e.py, so the tutorial's code is
code that works. The tutorial shows a file of every component kind.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "plugins.md"
BLOCK = re.compile(r"```(\w+)\n# ((?:tests|packages)/[^\n]+)\n(.*?)\n```", re.S)


def _blocks() -> dict[str, str]:
    return {path: body for _, path, body in BLOCK.findall(DOC.read_text())}


def test_every_file_shown_in_the_tutorial_is_the_file() -> None:
    blocks = _blocks()
    assert len(blocks) >= 8
    for path, body in blocks.items():
        actual = (ROOT / path).read_text().rstrip()
        assert body == actual, f"docs/plugins.md shows {path} differently from the file: copy the file into the doc"


def test_the_tutorial_shows_every_component_kind() -> None:
    """A dataset, an adapter, a store, an architecture, an analysis, an export format and the
    hooks (with the command) — each as a file of the example plugin."""
    text = "\n".join(_blocks().values())
    for base in ("(Dataset)", "(ModelAdapter)", "(ActivationStore)", "(ActivationReader)", "(ActivationWriter)",
                 "(Architecture)", "(Bank)", "(Analysis)", "(Exporter)", "def register_commands("):
        assert base in text, base
    pkg = ROOT / "tests/example_plugin/src/sae_example_plugin"
    shown = {Path(p).name for p in _blocks()}
    assert {"plugin.py", "shapes.py", "patches.py", "npz_store.py", "signed_topk.py", "analysis.py",
            "export.py"} <= shown
    assert all((pkg / name).is_file() for name in shown if name.endswith(".py"))
