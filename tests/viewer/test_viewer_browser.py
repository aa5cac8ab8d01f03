"""The viewer in a real browser: `sae view` serves a small run, headless Chromium (driven by
Playwright, using Debian's /usr/bin/chromium) opens the feature page, checks the patch heatmaps
render, and saves a screenshot under the test's tmp dir."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_viewer import image_run  # noqa: F401  (module-scoped fixture: a trained + analysed run)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (apt-get install chromium)")
def test_feature_page_in_headless_chromium(image_run: Path, tmp_path: Path) -> None:  # noqa: F811
    playwright = pytest.importorskip("playwright.sync_api")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sae_core", "view", str(image_run), "--port", str(port), "--headless"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("viewer did not start")
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_text("Run overview").wait_for(timeout=60_000)
            page.get_by_text("Features", exact=True).click()
            page.get_by_text("Top examples of latent").wait_for(timeout=60_000)
            page.locator("[data-testid='stImage'] img").first.wait_for(timeout=60_000)
            assert page.locator("[data-testid='stImage'] img").count() >= 1
            shot = tmp_path / "feature_page.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert shot.stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait(timeout=30)
