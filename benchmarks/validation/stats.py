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


def _partial(r, rac, rbc):
    with np.errstate(invalid="ignore", divide="ignore"):
        return (r - rac * rbc) / np.sqrt((1 - rac**2) * (1 - rbc**2))


def spearman(a, b, given=None):
    """Spearman's ρ of a and b (the partial ρ given c when ``given`` is c); rows of 2-D input are
    separate samples."""
    ra, rb = _ranks(a), _ranks(b)
    r = _pearson(ra, rb)
    if given is None:
        return r
    rc = _ranks(given)
    return _partial(r, _pearson(ra, rc), _pearson(rb, rc))


def _weighted_ranks(a, W):
    """Mid-ranks of the units in each resample given by the multiplicities W (boots, n): a unit's
    copies and its ties share the mean of the ranks they occupy."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    start = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first sorted index of every tie group
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    cs = np.concatenate([np.zeros((W.shape[0], 1)), np.cumsum(W[:, order], axis=1)], axis=1)
    before = cs[:, start]  # weight sorted strictly below each group
    total = np.diff(np.concatenate([before, cs[:, -1:]], axis=1), axis=1)
    r = np.empty(W.shape, dtype=np.float64)
    r[:, order] = (before + (total + 1) / 2)[:, group]
    return r


def _weighted_pearson(ra, rb, W):
    w = W / W.sum(axis=1, keepdims=True)
    ma, mb = (w * ra).sum(1, keepdims=True), (w * rb).sum(1, keepdims=True)
    cov = (w * (ra - ma) * (rb - mb)).sum(1)
    den = np.sqrt((w * (ra - ma) ** 2).sum(1) * (w * (rb - mb) ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, cov / np.where(den > 0, den, 1.0), np.nan)


def weights(groups, boots, rng, clustered):
    """Multiplicities (boots, n) of the units in ``boots`` resamples: i.i.d. over units, or
    two-stage (groups with replacement, then, for every drawn copy of a group, its units with
    replacement: a group drawn k times has its n_g units drawn k·n_g times)."""
    n = len(groups)
    if not clustered:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=boots).astype(np.float64)
    labels = np.unique(groups)
    K = rng.multinomial(len(labels), np.full(len(labels), 1.0 / len(labels)), size=boots)
    W = np.zeros((boots, n))
    for c, g in enumerate(labels):
        idx = np.flatnonzero(groups == g)
        W[:, idx] = rng.multinomial(K[:, c] * idx.size, np.full(idx.size, 1.0 / idx.size))
    return W


def _interval(draws, level):
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return [None, None]
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def correlation(a, b, groups=None, given=None, boots=1000, seed=0, level=0.95):
    """{"value", "n", "clusters", "iid": [low, high], "clustered": [low, high]} for Spearman's ρ
    of a and b (partial given ``given``) over the finite rows; "clustered" only with ``groups``.
    A resample is a vector of multiplicities; its ρ is the weighted Pearson correlation of the
    weighted mid-ranks, which equals Spearman's ρ of the resample written out."""
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
    out["value"] = float(spearman(*cols[:2], given=cols[2] if given is not None else None))
    if boots <= 0:
        return out
    rng = np.random.default_rng(seed)
    for kind in ["iid"] + ([] if g is None else ["clustered"]):
        W = weights(g if g is not None else np.zeros(n), boots, rng, kind == "clustered")
        r = [_weighted_ranks(c, W) for c in cols]
        draws = _weighted_pearson(r[0], r[1], W)
        if given is not None:
            draws = _partial(draws, _weighted_pearson(r[0], r[2], W), _weighted_pearson(r[1], r[2], W))
        out[kind] = _interval(draws, level)
    return out
