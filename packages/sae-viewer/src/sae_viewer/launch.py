"""``sae view``: start the Streamlit viewer on a run directory."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from sae_core import SAEError

APP = Path(__file__).with_name("app.py")


def view(
    run: Annotated[Path, typer.Argument(help="A run directory from `sae train` (or one SAE checkpoint).")],
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    headless: Annotated[bool, typer.Option("--headless", help="Do not open a browser.")] = False,
) -> None:
    """Browse a run's SAEs and their features in the Streamlit viewer."""
    from sae_core import find_checkpoints, read_cfg

    if not run.is_dir():
        raise SAEError(f"{run} is not a directory; pass the --out of `sae train`")
    for ckpt in find_checkpoints(run):  # nothing to show is an error now, not an empty page in the browser
        read_cfg(ckpt)  # nor is a cfg.json in no format we read (one line, listing the formats)
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
           "--server.headless", "true" if headless else "false", "--browser.gatherUsageStats", "false",
           "--", str(run.resolve())]
    raise SystemExit(_serve(cmd))


def _serve(cmd: list[str]) -> int:
    """Run the Streamlit server as a child and pass SIGTERM/SIGINT/SIGHUP on to it, so stopping
    `sae view` (a service manager, a test, Ctrl-C) stops the server too instead of orphaning it."""
    proc = subprocess.Popen(cmd)

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signum)

    caught = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in caught}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    """``sae-viewer RUN_DIR`` console script."""
    typer.run(view)
