"""Shared by the tests (moved from tests/viewer/test_viewer.py)."""

from __future__ import annotations

from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "packages" / "sae-viewer" / "src" / "sae_viewer" / "app.py"
