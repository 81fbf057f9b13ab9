"""Dataset summary of per-input λ_max: quantiles, the mean with a percentile bootstrap
interval (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13), and the
Spearman rank correlation of λ_max with the logit margin, and the median first-order distance
to the nearest decision boundary (:mod:`fimaudit.first_order`) over the rows that have one."""

from __future__ import annotations

import numpy as np


def summarize(rows, seed=0, resamples=2000, level=0.95):
    """The summary of audit rows; the rank correlation only when every row has a margin (a
    Gaussian model's rows have none).

    >>> rows = [dict(status="ok", lambda_max=v, margin=None, label=None, prediction=0.0) for v in (1.0, 2.0, 4.0)]
    >>> s = summarize(rows)
    >>> s["lambda_max_quantiles"]["median"], "spearman_lambda_vs_margin" in s
    (2.0, False)
    """
    ok = [r for r in rows if r["status"] == "ok"]
    lam = np.array([r["lambda_max"] for r in ok], dtype=np.float64)
    out = dict(inputs=len(rows), completed=len(ok), failed=len(rows) - len(ok))
    if lam.size == 0:
        return out
    q = np.quantile(lam, [0.0, 0.25, 0.5, 0.75, 0.95, 1.0])
    out["lambda_max_quantiles"] = dict(zip(["min", "q25", "median", "q75", "q95", "max"], map(float, q)))
    rng = np.random.default_rng(seed)
    boots = lam[rng.integers(0, lam.size, (resamples, lam.size))].mean(axis=1)
    a = (1 - level) / 2
    out["lambda_max_mean"] = dict(
        value=float(lam.mean()), low=float(np.quantile(boots, a)), high=float(np.quantile(boots, 1 - a)), level=level
    )
    margin = np.array([r["margin"] for r in ok if r["margin"] is not None], dtype=np.float64)  # none: Gaussian
    if lam.size > 2 and margin.size == lam.size and np.ptp(lam) > 0 and np.ptp(margin) > 0:
        from scipy import stats  # imported on use: scipy.stats costs seconds at start-up

        out["spearman_lambda_vs_margin"] = float(stats.spearmanr(lam, margin).statistic)
    first = [r.get("first_order_distance") for r in ok]  # absent from journals of older runs
    first = np.array([v for v in first if v is not None], dtype=np.float64)
    if first.size:
        out["first_order_distance_median"] = float(np.median(first))  # +inf only if half the rows are
    labels = [r["label"] for r in ok if r["label"] is not None]
    if labels:
        out["accuracy"] = float(np.mean([r["label"] == r["prediction"] for r in ok if r["label"] is not None]))
    return out


def precision(rows, tol):
    """The precision a ``tol`` audit reached: how many rows met tol, the largest and median
    relative half-width, the median and largest probes, and the rows that missed (the first 10).

    >>> rows = [dict(status="ok", tol_met=h <= 0.05, halfwidth=h, probes=k) for h, k in ((0.04, 90), (0.07, 120))]
    >>> p = precision(rows, 0.05)
    >>> p["met"], p["missed"], p["halfwidth_max"], p["missed_first"]
    (1, 1, 0.07, [1])
    """
    seq = [(i, r) for i, r in enumerate(rows) if r.get("status") == "ok" and r.get("halfwidth") is not None]
    out = dict(tol=tol, rows=len(seq))
    if not seq:
        return out
    hw = np.array([r["halfwidth"] for _, r in seq], dtype=np.float64)
    k = np.array([r["probes"] for _, r in seq], dtype=np.float64)
    missed = [r.get("index", i) for i, r in seq if not r["tol_met"]]
    out.update(
        met=len(seq) - len(missed),
        missed=len(missed),
        halfwidth_median=float(np.median(hw)),
        halfwidth_max=float(hw.max()),
        probes_median=float(np.median(k)),
        probes_max=int(k.max()),
        missed_first=missed[:10],
    )
    return out
