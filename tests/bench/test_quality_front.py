"""bench/quality.py's matched-L0 front: the lower convex hull in (log L0, FVU), so a poorly trained
run that no run beats on both axes does not drag the interpolated FVU up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
quality = pytest.importorskip("quality")


def run(l0: float, fvu: float) -> dict[str, float]:
    return {"l0": l0, "fvu": fvu, "dead": 0.0, "lr": 1e-3}


def test_front_is_the_lower_convex_hull_in_log_l0() -> None:
    # SAELens BatchTopK on MiniLM: 86.0 at 0.2166 is non-dominated but above the 46.3 -> 93.2 chord
    rows = [run(22.8, 0.3271), run(46.3, 0.2216), run(86.0, 0.2166), run(93.2, 0.1497),
            run(43.1, 0.3188), run(120.0, 0.1600), run(46.3, 0.3000)]
    front = quality.pareto(rows)
    assert [r["l0"] for r in front] == [22.8, 46.3, 93.2]  # 43.1 and 86.0 above a chord, 120 dominated
    t = (quality.math.log(64) - quality.math.log(46.3)) / (quality.math.log(93.2) - quality.math.log(46.3))
    assert quality.interp_fvu(front, 64.0) == pytest.approx(0.2216 + t * (0.1497 - 0.2216))
    assert quality.pareto([run(10.0, 0.5)]) == [run(10.0, 0.5)]
    assert quality.interp_fvu(front, 16.0) is None  # below the front's range: no comparison
