r"""Bounds on the centred vector of a LayerNormalization and on its variance.

Over a group of n values v, d = v − mean(v) = (I − 11ᵀ/n) v is linear in v, so each d_i is a
row ``G_i = e_i − 1/n`` of v and gets the bounds of any row: the mean-value form over the input
set and CROWN (:mod:`.crown`), both on d_i itself, which the interval of v (where every entry
moves alone) sees only as ``d_i ± (r_i (1 − 1/n) + Σ_{j≠i} r_j / n)``.

The variance mean(d²) is then bounded below by the least ‖d‖²/n over the centred box
``D = {d : l ≤ d ≤ u, Σ d = 0}`` (every d of the input set lies in D). By weak duality, for
every λ,

``min_D ‖d‖² ≥ g(λ) = Σ_i min_{l_i ≤ d_i ≤ u_i} (d_i² + 2λ d_i) = Σ_i (c_i² + 2λ c_i)``,
c_i = clip(−λ, l_i, u_i);

g is concave with g'(λ) = 2 Σ c_i, so λ is found by bisection on Σ clip(−λ, l, u) = 0 and g(λ)
is a lower bound whatever λ the bisection stops at.

Both ends of the variance also follow from linear bounds on d, which keep the correlation of
its entries that the box D loses: d_i² lies above its tangent at any d0 and below its chord on
[l_i, u_i], so

``2 d0·d − ‖d0‖² ≤ ‖d‖² ≤ (l + u)·d − Σ_i l_i u_i``,

and a·d = (a − ā)·v is one row of v, bounded below (or above) over the input set like every row
(mean-value form and CROWN). With d0 = d(x) the lower end is exact up to ‖d − d0‖² and the
bound on a row; the upper end loses at most Σ_i ((u_i − l_i)/2)².

References: Shi et al., ICLR 2020, "Robustness verification for Transformers" (layer
normalisation through its centred vector); Boyd and Vandenberghe, 2004, "Convex optimization",
§5.2 (weak duality).
"""

from __future__ import annotations

import numpy as np

from . import crown, layout

STEPS = 60  # bisection steps on λ


def bounds(p, v, n, step):
    """(low, high) of d = v − group mean, shaped (groups, n), on the input set of pass p, from
    the mean-value form and CROWN on each d_i (``step`` rows per backward pass)."""
    size = p.lo[v].size
    full = (1, *p.net.g.shape(v))
    low, high = np.full(size, -np.inf), np.full(size, np.inf)
    z = p.point[v].reshape(-1, n)
    dz = (z - z.mean(-1, keepdims=True)).reshape(-1)
    for s in range(0, size, step):
        idx = np.arange(s, min(size, s + step))
        G = np.zeros((idx.size, size))
        G[np.arange(idx.size), idx] = 1.0
        G = G.reshape(idx.size, -1, n)
        G = G - G.sum(-1, keepdims=True) / n  # rows e_i − 1/n on i's group
        G = layout.held(G.reshape(idx.size, *full[1:]), p.net.g, v)
        Jm, Jr = p.backward(v, G)
        lo, up = p.offsets(Jm, Jr)
        low[idx], high[idx] = dz[idx] + lo, dz[idx] + up
        if p.crown:
            lo, up = crown.bounds(p, v, G)
            low[idx], high[idx] = np.maximum(low[idx], lo), np.minimum(high[idx], up)
    return low.reshape(-1, n), high.reshape(-1, n)


def variance_bounds(p, v, n, lo, hi, d0):
    """(low, high) of mean(d²) per group (shaped (groups,)) on the input set of pass p, from
    the tangent of ‖d‖² at d0 and its chords over d's box [lo, hi] (the module docstring):
    the rows d0 and lo + hi of d, bounded as rows of v by the mean-value form and CROWN."""
    groups = lo.shape[0]
    z = p.point[v].reshape(-1, n)
    dz = z - z.mean(-1, keepdims=True)
    rows = np.zeros((2 * groups, groups, n))
    for c, a in enumerate((d0, lo + hi)):
        rows[c * groups + np.arange(groups), np.arange(groups)] = a - a.mean(-1, keepdims=True)  # (a − ā)·v = a·d
    at = (rows * dz[None]).reshape(2 * groups, -1).sum(1)
    G = layout.held(rows.reshape(2 * groups, *p.net.g.shape(v)), p.net.g, v)
    low, up = p.offsets(*p.backward(v, G))
    low, up = at + low, at + up
    if p.crown:
        clo, cup = crown.bounds(p, v, G)
        low, up = np.maximum(low, clo), np.minimum(up, cup)
    tangent, chord = 2 * low[:groups] - (d0 * d0).sum(-1), up[groups:] - (lo * hi).sum(-1)
    slack = 1e-12 * (np.abs(low[:groups]) + (d0 * d0).sum(-1) + np.abs(up[groups:]) + np.abs(lo * hi).sum(-1))
    return np.maximum(tangent - slack, 0.0) / n, (chord + slack) / n


def least_square_norm(lo, hi):
    """A lower bound on min ‖d‖² over {lo ≤ d ≤ hi, Σ d = 0}, per row (last axis); 0 where the
    set may be empty or holds 0."""
    a, b = -hi.max(-1, keepdims=True), -lo.min(-1, keepdims=True)  # Σ clip(−λ) ≥ 0 at a, ≤ 0 at b
    for _ in range(STEPS):
        lam = (a + b) / 2
        pos = np.clip(-lam, lo, hi).sum(-1, keepdims=True) > 0
        a, b = np.where(pos, lam, a), np.where(pos, b, lam)
    lam = (a + b) / 2
    c = np.clip(-lam, lo, hi)
    g = (c * c + 2 * lam * c).sum(-1) - 1e-12 * (c * c + 2 * np.abs(lam * c)).sum(-1)  # less rounding
    return np.maximum(g, 0.0)
