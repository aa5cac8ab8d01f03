"""Shared test configuration: GPU tests skip cleanly without CUDA; the CLI runs in-process."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _install_example_plugin_for_tests() -> None:
    """Put the example plugin (tests/example_plugin) on the path of this process and of every
    subprocess a test starts, with its entry point, as `pip install` would — for the tests only.

    A user's `uv sync` does not install it (it is a test fixture, not a shipped component), so
    its distribution metadata is written into a temporary directory on ``sys.path``/``PYTHONPATH``
    that ``importlib.metadata`` scans like site-packages.
    """
    import sys
    import tempfile
    import tomllib
    from pathlib import Path

    root = Path(__file__).parent / "example_plugin"
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    site = Path(tempfile.mkdtemp(prefix="sae-test-plugins-"))
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    eps = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
                  for group, entries in project["entry-points"].items())
    (info / "entry_points.txt").write_text(eps)
    paths = [str(root / "src"), str(site)]
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ["SAE_TEST_PLUGIN_SITE"] = str(site)  # tests of a plain install remove it from their subprocess


_install_example_plugin_for_tests()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def cli_runner(capsys: pytest.CaptureFixture[str] | None = None):
    """A function running ``sae ARGS...`` in-process, returning (exit_code, stdout, stderr).

    Without ``capsys`` (module-scoped fixtures) output is captured with redirect_std*.
    """
    import contextlib
    import io

    from sae_core.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        redirect = contextlib.nullcontext() if capsys else contextlib.ExitStack()
        with redirect as stack:
            if stack is not None and not capsys:
                stack.enter_context(contextlib.redirect_stdout(out))
                stack.enter_context(contextlib.redirect_stderr(err))
            try:
                main(list(args))
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if capsys:
            captured = capsys.readouterr()
            return code, captured.out, captured.err
        return code, out.getvalue(), err.getvalue()

    return _run


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run ``sae ARGS...`` in-process; returns (exit_code, stdout, stderr)."""
    return cli_runner(capsys)
