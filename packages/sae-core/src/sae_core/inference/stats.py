"""Standard errors for metrics that are ratios of sums over rows (jackknife over rows).

Tokens of one row (a text window, an image) are correlated, so errors are computed over rows:
each metric is a function of per-row sums (Σ NLL, Σ targets, ...), and the delete-one-row
jackknife gives its standard error — for means, for differences of paired means (CE spliced
− CE clean on the same rows) and for ratios such as CE loss recovered alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def jackknife(sums: np.ndarray, stat: Callable[[np.ndarray], np.ndarray]) -> tuple[float | None, float | None]:
    """(value, standard error) of ``stat`` over rows.

    ``sums``: (rows, k) per-row sums; ``stat`` maps totals (..., k) to values (...), vectorised.
    The value is ``stat`` of the full totals; the error is None with fewer than 2 rows, and the
    value None where ``stat`` is not finite (e.g. a zero denominator)."""
    sums = np.asarray(sums, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(stat(sums.sum(0)))
        if not np.isfinite(value):
            return None, None
        m = len(sums)
        if m < 2:
            return value, None
        loo = stat(sums.sum(0)[None, :] - sums)  # (rows,): the statistic without each row
    loo = loo[np.isfinite(loo)]
    if len(loo) < 2:
        return value, None
    se = float(np.sqrt((m - 1) / m * ((loo - loo.mean()) ** 2).sum()))
    return value, se


def ratio(num: int, den: int) -> Callable[[np.ndarray], np.ndarray]:
    """stat for Σ column ``num`` / Σ column ``den``."""
    return lambda t: t[..., num] / t[..., den]
