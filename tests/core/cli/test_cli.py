"""CLI behaviour shared by all commands: help, one-line errors, `sae info`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_help_lists_commands(run_cli) -> None:
    code, out, _ = run_cli("--help")
    assert code == 0
    for cmd in ("plugins", "info", "cache"):
        assert cmd in out


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sae_core", "info", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert res.returncode == 1
    assert res.stderr.startswith("error: ") and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_info_rejects_unknown_directory(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("info", str(tmp_path))
    assert code == 1 and "is not a cache" in err


def test_info_describes_checkpoint(run_cli, tmp_path: Path) -> None:
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": 8, "d_sae": 32}))
    code, out, _ = run_cli("info", str(tmp_path))
    assert code == 0
    data = json.loads(out)
    assert data["kind"] == "checkpoint" and data["cfg"]["d_sae"] == 32


def test_info_reports_corrupt_json(run_cli, tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text("{not json")
    code, _, err = run_cli("info", str(tmp_path))
    assert code == 1 and "corrupt" in err
