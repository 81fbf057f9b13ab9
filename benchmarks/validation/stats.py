"""Rank correlations with percentile-bootstrap confidence intervals (Efron & Tibshirani, 1993).

Spearman's ρ is Pearson's correlation of the ranks (ties get their mean rank); the partial ρ of
a and b given c is (ρ_ab − ρ_ac ρ_bc)/√((1 − ρ_ac²)(1 − ρ_bc²)) on the same ranks.

Two intervals for every pooled number. The i.i.d. one resamples the units as if they were
independent. The clustered one is the two-stage bootstrap for nested data (Davison & Hinkley,
1997, §3.8; Field & Welsh, 2007): draw the clusters (here: models) with replacement, then the
units within each drawn cluster with replacement. Inputs of one model share that model's
scale, so pooled over models they are not independent and only the clustered interval
reflects how the number would vary with another family of models. Resamples where a variable
is constant are dropped.
"""

import numpy as np
from scipy import stats


def _ranks(a):
    return stats.rankdata(a, axis=-1)


def _pearson(ra, rb):
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    den = np.sqrt((ra**2).sum(-1) * (rb**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman(a, b, given=None):
    """Spearman's ρ of a and b (the partial ρ given c when ``given`` is c); rows of 2-D input are
    separate samples."""
    ra, rb = _ranks(a), _ranks(b)
    r = _pearson(ra, rb)
    if given is None:
        return r
    rc = _ranks(given)
    rac, rbc = _pearson(ra, rc), _pearson(rb, rc)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (r - rac * rbc) / np.sqrt((1 - rac**2) * (1 - rbc**2))


def resample(groups, boots, rng, clustered):
    """``boots`` index arrays into units labelled by ``groups``: i.i.d. over units, or two-stage
    (groups with replacement, then units within each drawn group)."""
    n = len(groups)
    if not clustered:
        return list(rng.integers(0, n, size=(boots, n)))
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    out = []
    for _ in range(boots):
        picks = rng.integers(0, len(members), size=len(members))
        out.append(np.concatenate([m[rng.integers(0, m.size, size=m.size)] for m in (members[i] for i in picks)]))
    return out


def _interval(draws, level):
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return [None, None]
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def correlation(a, b, groups=None, given=None, boots=1000, seed=0, level=0.95):
    """{"value", "n", "clusters", "iid": [low, high], "clustered": [low, high]} for Spearman's ρ
    of a and b (partial given ``given``) over the finite rows; "clustered" only with ``groups``."""
    cols = [np.asarray(v, dtype=np.float64) for v in (a, b) + (() if given is None else (given,))]
    keep = np.logical_and.reduce([np.isfinite(c) for c in cols])
    cols = [c[keep] for c in cols]
    g = None if groups is None else np.asarray(groups)[keep]
    n = int(keep.sum())
    out = {"value": None, "n": n, "clusters": None if g is None else int(np.unique(g).size), "iid": [None, None]}
    if g is not None:
        out["clustered"] = [None, None]
    if n < 4 or any(np.ptp(c) == 0 for c in cols):
        return out
    value = spearman(*cols[:2], given=cols[2] if given is not None else None)
    out["value"] = float(value)
    if boots <= 0:
        return out
    rng = np.random.default_rng(seed)
    for kind in ["iid"] + ([] if g is None else ["clustered"]):
        idx = resample(g if g is not None else np.zeros(n), boots, rng, kind == "clustered")
        if kind == "iid":  # equal lengths: one vectorised pass
            ix = np.stack(idx)
            draws = spearman(cols[0][ix], cols[1][ix], given=cols[2][ix] if given is not None else None)
        else:
            draws = np.array([spearman(*(c[i] for c in cols[:2]), given=cols[2][i] if given is not None else None)
                              for i in idx])  # fmt: skip
        out[kind] = _interval(np.asarray(draws, dtype=np.float64), level)
    return out
