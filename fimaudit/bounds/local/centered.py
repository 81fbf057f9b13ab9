r"""Bounds on the centred vector of a LayerNormalization and on its variance from below.

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
