"""`sae report`: the self-contained HTML report of a run, checked as HTML (fast) and rendered in
headless Chromium (slow; skipped without Debian's chromium)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import helpers.shared_runs as shared_runs
import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTIONS = ("frontier", "curves", "density", "downstream", "features")
DATA_IMG = re.compile(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _pngs(doc: str) -> list[bytes]:
    return [base64.b64decode(m) for m in DATA_IMG.findall(doc)]


@pytest.fixture
def report(tmp_path_factory, tmp_path: Path, run_cli) -> tuple[Path, Path, str]:
    run = shared_runs.analysed_lm_run(tmp_path_factory)
    out = tmp_path / "r" / "report.html"
    code, stdout, err = run_cli("report", str(run), "--out", str(out), "--features", "3", "--examples", "2")
    assert code == 0, err
    assert stdout.strip() == str(out)
    return run, out, out.read_text()


def test_report_html_is_self_contained_with_plots_and_sections(report) -> None:
    run, out, doc = report
    for section in SECTIONS:
        assert f'id="{section}"' in doc
    pngs = _pngs(doc)
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)  # frontier, curves, density
    saved = sorted((out.parent / "report_files").glob("*.png"))
    assert [p.name for p in saved] == ["density.png", "frontier.png", "training_curves.png"]
    assert sorted(p.read_bytes() for p in saved) == sorted(pngs)
    assert not re.search(r'(src|href)="(https?:)?//', doc)  # nothing external: it opens from disk
    assert 'class="missing"' not in doc  # analysed: every section has its data
    # the frontier table carries sweep.json's numbers and names their split
    (entry,) = json.loads((run / "sweep.json").read_text())["saes"]
    assert f"{entry['final']['fvu']:.4g}" in doc and f"{entry['final']['val_fvu']:.4g}" in doc
    rec = json.loads((run / entry["path"] / "reconstruction.json").read_text())
    assert f"<td>{rec['fvu']:.4g}</td>" in doc and f"<td>{rec['split']}</td>" in doc
    down = json.loads((run / entry["path"] / "downstream.json").read_text())
    assert f"{down['ce_clean']:.4f}" in doc
    # top features: text windows with highlighted tokens decoded through the cache's vocab
    assert doc.count('class="latent"') == 3
    windows = re.findall(r'<div class="ctx">.*?</div>', doc)
    assert len(windows) == 6 and all('class="tok"' in w for w in windows)
    words = set(re.findall(r'class="tok"[^>]*>\s*([^<]+)<', doc))
    assert words & set(shared_runs.WORDS), words


def test_report_says_which_command_makes_missing_sections(tmp_path_factory, tmp_path: Path, run_cli) -> None:
    run = shared_runs.analysed_lm_run(tmp_path_factory)
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns(
        "feature_stats.*", "top_examples.*", "reconstruction.json", "downstream.json", "report*"))
    code, _, err = run_cli("report", str(bare))
    assert code == 0, err
    doc = (bare / "report.html").read_text()
    missing = re.findall(r'<p class="missing">(.*?)</p>', doc)
    assert len(missing) == 4, missing  # reconstruction, density, downstream, features
    assert all("sae analyze" in m for m in missing)
    assert len(_pngs(doc)) == 2  # the frontier (from sweep.json) and the curves still plot


def test_report_bad_input_is_one_line(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("report", str(tmp_path / "nope"))
    assert code == 1 and "is not a directory" in err and "Traceback" not in err
    code, _, err = run_cli("report", str(tmp_path))
    assert code == 1 and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path: Path) -> None:
    _, out, _ = report
    url = out.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *ARGS, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    pngs = _pngs(dom)
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG") for p in pngs)
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *ARGS, "--window-size=1200,4000", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 50_000  # a page of plots and text, not a blank one
    keep = os.environ.get("SAE_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_image_examples_are_thumbnails_when_the_dataset_reopens_else_ids() -> None:
    import numpy as np
    from sae_viewer.report import _examples_html

    top = {"values": np.array([0.5, 0.25], np.float32), "examples": np.array([3, 7]),
           "token_acts": np.zeros((2, 17), np.float16),
           "meta": {"modality": "image", "token_kinds": ["cls"] + ["patch"] * 16, "extra": {},
                    "dataset": {"spec": "samples", "modality": "image", "options": {"n": 16}}}}
    doc = _examples_html(top, None, 5)
    thumbs = re.findall(r'<img alt="example (\d+)"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)
    assert [int(e) for e, _ in thumbs] == [3, 7]
    assert all(base64.b64decode(b).startswith(b"\x89PNG") for _, b in thumbs)
    top["meta"]["dataset"] = {"spec": "imagefolder:/nonexistent/photos", "modality": "image"}
    doc = _examples_html(top, None, 5)
    assert "<img" not in doc and "examples 3 (0.500), 7 (0.250)" in doc and "could not be re-opened" in doc
