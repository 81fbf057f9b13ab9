"""Rank correlations with percentile-bootstrap confidence intervals (Efron & Tibshirani, 1993).

Spearman's ρ and Kendall's τ-b (scipy). The interval resamples the units (inputs or models)
with replacement; resamples where a variable is constant are dropped.
"""

import numpy as np
from scipy import stats


def _corr(kind, a, b):
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan
    return (stats.spearmanr(a, b) if kind == "spearman" else stats.kendalltau(a, b))[0]


def correlation(a, b, kind="spearman", boots=1000, seed=0, level=0.95):
    """{"value", "low", "high", "n"} for the rank correlation of a and b over finite pairs."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = a.size
    if n < 3:
        return {"value": None, "low": None, "high": None, "n": int(n)}
    rng = np.random.default_rng(seed)
    draws = np.array([_corr(kind, a[i], b[i]) for i in rng.integers(0, n, size=(boots, n))])
    draws = draws[np.isfinite(draws)]
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2]) if draws.size else (np.nan, np.nan)
    return {"value": float(_corr(kind, a, b)), "low": float(lo), "high": float(hi), "n": int(n)}
