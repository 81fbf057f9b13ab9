r"""Bounds on a softmax's output from linear bounds on its input, through log p = u − LSE(u).

With u the softmax's input on the input set, u₀ = u(x), p₀ = softmax(u₀) and δ = u − u₀,
log-sum-exp is convex with gradient p₀ at u₀ and Hessian diag(p) − ppᵀ, so (Taylor with the
Lagrange remainder at a point ξ of the segment, inside u's box)

``p₀·δ ≤ LSE(u) − LSE(u₀) ≤ p₀·δ + ½ Σ_j p_h,j r_j²``,

p_h the upper ends of the softmax's output interval and r_j ≥ |δ_j| the reach of u's box from
u₀ (δᵀ(diag(p) − ppᵀ)δ ≤ Σ p_j δ_j²). So with ℓ_i(u) = (e_i − p₀)·u, one row of u per output,

``log p₀,i + ℓ_i(u) − ℓ_i(u₀) − ½ Σ_j p_h,j r_j² ≤ log p_i(u) ≤ log p₀,i + ℓ_i(u) − ℓ_i(u₀)``,

and ℓ_i's bounds over the input set (mean-value form and CROWN, :mod:`.crown`) keep the
correlation of the scores in a row that the box of u loses (ℓ_i sees only their differences:
its coefficients sum to 0). The output's interval is intersected with the exponentials of both
ends.

References: Shi et al., ICLR 2020, "Robustness verification for Transformers" (softmax from
bounds on its inputs); Wei et al., AISTATS 2023, "Convex bounds on the softmax function with
applications to robustness verification" (bounds through log-sum-exp).
"""

from __future__ import annotations

import numpy as np

from ..rules import attr
from . import crown, layout

SLACK = 1e-12  # relative, for the rounding of the logs and exponentials


def narrow(p, node, lo, hi, step):
    """The softmax ``node``'s output interval [lo, hi] (full form) narrowed, ``step`` rows per
    backward pass; as it is where the input has more units than the pass tightens."""
    g, u = p.net.g, node.input[0]
    size = p.lo[u].size
    if size > p.limit:
        return lo, hi
    rank = len(g.shape(u))
    ax = layout.axis(attr(node, "axis", -1), rank)
    last = lambda t: np.moveaxis(layout.full(t, g, u), ax, -1)  # noqa: E731  (1, …, n)
    z, ulo, uhi = last(p.point[u]), last(p.lo[u]), last(p.hi[u])
    moved, n = z.shape, z.shape[-1]
    z, ulo, uhi = (t.reshape(-1, n) for t in (z, ulo, uhi))
    k = z.shape[0]
    lse = z.max(-1, keepdims=True) + np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
    logp0 = z - lse
    p0 = np.exp(logp0)
    plo, phi = (np.moveaxis(t, ax, -1).reshape(-1, n) for t in (lo, hi))
    reach = np.maximum(z - ulo, uhi - z)
    curve = 0.5 * (np.minimum(phi, 1.0) * reach * reach).sum(-1, keepdims=True)
    low, up = np.full(size, -np.inf), np.full(size, np.inf)
    for s in range(0, size, step):
        idx = np.arange(s, min(size, s + step))
        G = np.zeros((idx.size, k, n))
        G[np.arange(idx.size), idx // n] = -p0[idx // n]
        G[np.arange(idx.size), idx // n, idx % n] += 1.0
        at = (G * z).reshape(idx.size, -1).sum(1)
        Gh = layout.held(np.moveaxis(G.reshape(idx.size, *moved[1:]), -1, ax), g, u)
        a, b = p.offsets(*p.backward(u, Gh))
        low[idx], up[idx] = a, b
        if p.crown:
            cl, cu = crown.bounds(p, u, Gh)
            low[idx], up[idx] = np.maximum(a, cl - at), np.minimum(b, cu - at)
    low, up = low.reshape(k, n), up.reshape(k, n)
    with np.errstate(over="ignore", invalid="ignore"):
        hi = np.exp(logp0 + up + SLACK * (1 + np.abs(logp0) + np.abs(up))) * (1 + SLACK) + 1e-300
        lo = np.exp(logp0 + low - curve - SLACK * (1 + np.abs(logp0) + np.abs(low) + curve)) * (1 - SLACK)
    lo, hi = np.where(np.isnan(lo), 0.0, lo), np.where(np.isnan(hi), 1.0, hi)
    lo, hi = np.maximum(plo, np.minimum(lo, p0)), np.minimum(phi, np.maximum(hi, p0))
    return tuple(np.moveaxis(t.reshape(moved), -1, ax) for t in (lo, hi))
