"""Paired comparisons for the paper's ablation: paired t-test and Cohen's d."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired t-test of ``b - a`` and Cohen's d for paired samples (d_z = mean / sd of the differences).

    Returns ``{"n", "mean_diff", "t", "p", "cohens_d"}``; NaN where fewer than two pairs or no spread.
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    diff = y - x
    n = int(diff.size)
    if n < 2:
        return {
            "n": n,
            "mean_diff": float(diff.mean()) if n else math.nan,
            "t": math.nan,
            "p": math.nan,
            "cohens_d": math.nan,
        }
    sd = float(diff.std(ddof=1))
    if sd == 0.0:
        t = p = d = math.nan
    else:
        result = stats.ttest_rel(y, x)
        t, p, d = float(result.statistic), float(result.pvalue), float(diff.mean() / sd)
    return {"n": n, "mean_diff": float(diff.mean()), "t": t, "p": p, "cohens_d": d}
