r"""LayerNormalization (the fused op torch's dynamo exporter writes), forward on intervals and
backward on interval Jacobian rows (rows as in :mod:`.products`: signed M, radii R, and
``A = |M_0| + Σ_k |M_k|``).

Over each group of the n normalised values (the trailing axes from ``axis``):
d = x − μ (μ the mean), σ² = mean(d²) + ε, x̂ = d/σ, y = γ ⊙ x̂ + β.

Forward on a box x ∈ c ± r (per group):

* d = (I − 11ᵀ/n) x is linear: d ∈ d(c) ± (|1 − 1/n| r_i + Σ_{j≠i} r_j / n);
* when the pass tightens, d's interval is intersected with the mean-value form and CROWN
  bounds of each d_i as a row of x (:func:`.centered.bounds`);
* w = 1/σ ∈ [1/√(v_max + ε), 1/√(v_min + ε)], with v_min the larger of the least variance on
  the box of x (:func:`fimaudit.bounds.interval_rules.min_variance`, exact) and the least
  ‖d‖²/n on d's box with Σ d = 0 (:func:`.centered.least_square_norm`), and
  v_max = mean(max(d_lo², d_hi²)); when the pass tightens, both are intersected with the
  tangent and chord bounds of :func:`.centered.variance_bounds` (two rows of x per group);
  d's box is kept for :mod:`.lnrelax`;
* x̂ = d·w (a product of intervals, w > 0), intersected with the mean-value form
  ``x̂(c) ± ‖r‖₂ / σ_min`` (∂x̂/∂x = w (I − 11ᵀ/n − x̂x̂ᵀ/n), a projection times w, has norm ≤ w)
  and with |x̂_i| ≤ √(n − 1) (Σ x̂ = 0, Σ x̂² ≤ n);
* y = γ ⊙ x̂ + β.

Backward: a row g of ∂z/∂y is g' = g ⊙ γ at x̂, then ∂z/∂x = w (g' − ḡ' − x̂ (g'·x̂)/n) (ḡ' the
group mean of g'). Let L(g) = g − ḡ − x̂_m (g·x̂_m)/n, linear in g: signed rows go to w_m L(M).
With w = w_m + δw (|δw| ≤ w_r), x̂ = x̂_m + δx (|δx| ≤ x̂_r), g' = g_s + ρ (|ρ| ≤ R):

``h − L(g_s) = (ρ − ρ̄) − [x̂ (g_s·δx + ρ·x̂) + δx (g_s·x̂_m)]/n``, bounded by
``E = R + R̄ + [(|x̂_m| + x̂_r) T + x̂_r S]/n`` with ``T = Σ (A x̂_r + R (|x̂_m| + x̂_r))``,
``S = Σ_k |M_k·x̂_m|``; and ``w h − w_m L(g_s) = w_m (h − L(g_s)) + δw h`` with
|h| ≤ Σ_k |L(M_k)| + E, so the radius is ``(w_m + w_r) E + w_r Σ_k |L(M_k)|``.

Reference: Shi et al., ICLR 2020, "Robustness verification for Transformers" (bounds through
layer normalisation); Ba et al., 2016, "Layer normalization".
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import UnsupportedOnnxOpError
from ..interval_rules import min_variance
from ..rules import attr
from . import centered
from .layout import full, held

CHUNK = 1 << 22  # rows × tensor size per backward pass of the centred rows


def check(node, graph):
    consts = all(graph.is_const(i) for i in node.input[1:] if i)
    if not consts or sum(1 for o in node.output if o) > 1:
        raise UnsupportedOnnxOpError(
            f"LayerNormalization node {node.name!r} has a scale or bias that depends on the input, or its mean and "
            "inverse deviation are read: no local bound rule for it; the global lipschitz_bound still works"
        )


def _groups(node, graph, x):
    """x (rows, ...) as (rows, groups, n), and n."""
    v = node.input[0]
    s = graph.shape(v)
    n = math.prod(s[attr(node, "axis", -1) % len(s) :])
    return full(x, graph, v).reshape(x.shape[0], -1, n), n


def _affine(node, graph, n):
    """γ and β as (n,) vectors over a group (broadcast as the op broadcasts them)."""
    s = graph.shape(node.input[0])
    tail = s[attr(node, "axis", -1) % len(s) :]

    def get(k, default):
        if len(node.input) > k and node.input[k]:
            return np.broadcast_to(graph.const(node.input[k]).astype(np.float64), tail).reshape(n)
        return np.full(n, default)

    return get(1, 1.0), get(2, 0.0)


def forward(p, node):
    g, out = p.net.g, node.output[0]
    v = node.input[0]
    eps = attr(node, "epsilon", 1e-5)
    z, n = _groups(node, g, p.point[v])
    lo, hi = _groups(node, g, p.lo[v])[0][0], _groups(node, g, p.hi[v])[0][0]
    gamma, beta = _affine(node, g, n)
    d = z - z.mean(-1, keepdims=True)
    xhat = d / np.sqrt((d * d).mean(-1, keepdims=True) + eps)
    c, r = (lo + hi) / 2, (hi - lo) / 2
    dc = c - c.mean(-1, keepdims=True)
    dr = r * abs(1 - 1 / n) + (r.sum(-1, keepdims=True) - r) / n
    dlo, dhi = dc - dr, dc + dr
    vmin = min_variance(lo, hi)[:, None]
    if p.tighten and p.lo[v].size <= p.limit:  # d_i as rows of v, and the least ‖d‖² on their box
        clo, chi = centered.bounds(p, v, n, max(1, CHUNK // (2 * p.net.largest)))
        dd = d[0]
        dlo, dhi = np.minimum(np.maximum(dlo, clo), dd), np.maximum(np.minimum(dhi, chi), dd)
        vmin = np.maximum(vmin, centered.least_square_norm(dlo, dhi)[:, None] / n)
    p.lines[out] = (dlo, dhi)  # for the linear relaxation of :mod:`.lnrelax`
    vmax = np.maximum(dlo * dlo, dhi * dhi).mean(-1, keepdims=True)
    if p.tighten and p.lo[v].size <= p.limit and np.all(np.isfinite(dlo) & np.isfinite(dhi)):
        low, high = centered.variance_bounds(p, v, n, dlo, dhi, d[0])
        vmin, vmax = np.maximum(vmin, low[:, None]), np.minimum(vmax, high[:, None])
    smin = np.sqrt(vmin + eps)
    wlo, whi = 1 / np.sqrt(vmax + eps), 1 / smin
    xlo, xhi = np.minimum(dlo * wlo, dlo * whi), np.maximum(dhi * wlo, dhi * whi)
    at = dc / np.sqrt((dc * dc).mean(-1, keepdims=True) + eps)
    reach = np.linalg.norm(r, axis=-1, keepdims=True) / smin
    cap = math.sqrt(max(n - 1, 1))
    xlo = np.maximum.reduce([xlo, at - reach, np.full_like(xlo, -cap)])
    xhi = np.minimum.reduce([xhi, at + reach, np.full_like(xhi, cap)])
    xlo, xhi = np.minimum(xlo, xhat[0]), np.maximum(xhi, xhat[0])
    p.deriv[out] = ((xlo + xhi) / 2, (xhi - xlo) / 2, (wlo + whi) / 2, (whi - wlo) / 2)
    ylo = np.minimum(gamma * xlo, gamma * xhi) + beta
    yhi = np.maximum(gamma * xlo, gamma * xhi) + beta
    shape = (1, *g.shape(out))
    return tuple(held(t.reshape(shape), g, out) for t in (gamma * xhat + beta, ylo, yhi))


def refine(p, node):
    """x̂'s interval for the backward pass, also from the (tightened) output: x̂ = (y − β)/γ where γ ≠ 0."""
    g, out = p.net.g, node.output[0]
    xm, xr, wm, wr = p.deriv[out]
    n = xm.shape[-1]
    gamma, beta = _affine(node, g, n)
    ylo, yhi = (full(d[out], g, out).reshape(xm.shape) for d in (p.lo, p.hi))
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = (ylo - beta) / gamma, (yhi - beta) / gamma
    lo, hi = np.where(gamma != 0, np.minimum(a, b), -np.inf), np.where(gamma != 0, np.maximum(a, b), np.inf)
    lo, hi = np.maximum(lo, xm - xr), np.minimum(hi, xm + xr)
    p.deriv[out] = ((lo + hi) / 2, (hi - lo) / 2, wm, wr)


def backward(p, node, M, R, m):
    g, out, v = p.net.g, node.output[0], node.input[0]
    xm, xr, wm, wr = p.deriv[out]
    Mg, n = _groups(node, g, M)
    gamma, _ = _affine(node, g, n)
    Mg = Mg * gamma
    Rg = np.zeros((m, *Mg.shape[1:])) if R is None else _groups(node, g, R)[0] * np.abs(gamma)
    dot = (Mg * xm).sum(-1, keepdims=True)
    L = Mg - Mg.mean(-1, keepdims=True) - xm * dot / n
    fold = lambda t: t.reshape(-1, m, *t.shape[1:]).sum(0)  # noqa: E731
    A, S, absL = fold(np.abs(Mg)), fold(np.abs(dot)), fold(np.abs(L))
    ax = np.abs(xm) + xr
    T = (A * xr + Rg * ax).sum(-1, keepdims=True)
    E = Rg + Rg.mean(-1, keepdims=True) + (ax * T + xr * S) / n
    rad = (wm + wr) * E + wr * absL
    shape = g.shape(v)
    return [(v, held((wm * L).reshape(-1, *shape), g, v), held(rad.reshape(m, *shape), g, v))]
