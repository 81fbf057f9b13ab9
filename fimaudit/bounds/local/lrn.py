r"""Local response normalisation (ONNX LRN) on intervals, forward and backward (rows as in
:mod:`.products`: signed M, radii R, and ``A = |M_0| + Σ_k |M_k|``).

At each position, over the channels: ``y_c = x_c P_c`` with ``P_c = D_c^{−β}``,
``D_c = k + (α/n) Σ_{j∈N(c)} x_j²`` and N(c) = [c − ⌊(n−1)/2⌋, c + ⌈(n−1)/2⌉] ∩ [0, C). Its
Jacobian is ``∂y_c/∂x_j = δ_cj P_c − κ Q_c x_j [j ∈ N(c)]`` with ``Q_c = x_c D_c^{−β−1}`` and
κ = 2αβ/n, so a row g of ∂z/∂y goes to ``g ⊙ P − κ x ⊙ Nᵀ(g ⊙ Q)`` (Nᵀ v)_j = Σ_{c: j∈N(c)} v_c.

Forward on a box: ``D ∈ [D_min, D_max]`` from the least and largest squares of the window's
intervals (a square's least value is 0 where its interval holds 0), so ``P ∈ [D_max^{−β},
D_min^{−β}]``, ``Q`` is the product of x's interval with ``[D_max^{−β−1}, D_min^{−β−1}]``
(positive), and y's interval is that of :func:`fimaudit.bounds.interval_rules.lrn_interval`.

Backward with P = P_m + δP, Q = Q_m + δQ, x = x_m + δx (|δ·| ≤ the radii ·_r) and
g = g_s + ρ (|ρ| ≤ R): signed rows go to ``L(g_s) = g_s P_m − κ x_m Nᵀ(g_s Q_m)`` and

``gJ − L(g_s) = g_s δP + ρ P − κ [δx Nᵀ(g Q) + x_m Nᵀ(g_s δQ + ρ Q)]``,

whose magnitude is at most ``A P_r + R P_hi + κ [x_r Nᵀ((A + R) Q_abs) + |x_m| Nᵀ(A Q_r + R Q_abs)]``
with Q_abs = |Q_m| + Q_r (triangle inequality, term by term).

For :mod:`.magnitude`: ``|J| ≤ diag(P_hi) + κ diag(Q_abs) N diag(x_abs)`` elementwise, with
x_abs = |x_m| + x_r, applied to v ≥ 0 forward (:func:`magnitude`) and to u ≥ 0 backward
(:func:`magnitude_back`, its transpose).

Reference: Krizhevsky, Sutskever & Hinton, NeurIPS 2012 (local response normalisation).
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOnnxOpError
from ..interval_rules import lrn_interval
from ..rules import lrn_params
from .layout import standard


def check(node, graph):
    lrn_params(node)
    if not standard(graph, node.input[0]) or len(graph.shape(node.input[0])) < 3:
        raise UnsupportedOnnxOpError(
            f"LRN node {node.name!r} reads a tensor without the batch first and channels second: no local bound "
            "rule for it; the global lipschitz_bound still works"
        )


def _window(v, n, transpose=False):
    """Σ over each channel's window N(c) (axis 1), or with ``transpose`` over {c : j ∈ N(c)}."""
    before, after = (n - 1) // 2, n - 1 - (n - 1) // 2
    if transpose:
        before, after = after, before
    C = v.shape[1]
    csum = np.concatenate([np.zeros_like(v[:, :1]), np.cumsum(v, axis=1)], axis=1)
    c = np.arange(C)
    return np.take(csum, np.minimum(c + after + 1, C), axis=1) - np.take(csum, np.maximum(c - before, 0), axis=1)


def forward(p, node):
    """(point, lo, hi) of the output; the intervals of P, Q and x kept for the backward pass."""
    v, out = node.input[0], node.output[0]
    n, a, b, k = lrn_params(node)
    z, lo, hi = p.point[v], p.lo[v], p.hi[v]
    y = z * (k + a / n * _window(z * z, n)) ** -b
    ylo, yhi = lrn_interval((lo, hi), node)
    least = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(lo * lo, hi * hi))
    dmin, dmax = k + a / n * _window(least, n), k + a / n * _window(np.maximum(lo * lo, hi * hi), n)
    plo, phi = dmax**-b, dmin**-b
    rlo, rhi = dmax ** (-b - 1), dmin ** (-b - 1)
    qlo, qhi = np.minimum(lo * rlo, lo * rhi), np.maximum(hi * rlo, hi * rhi)
    p.deriv[out] = tuple(((h + l) / 2, (h - l) / 2) for l, h in ((plo, phi), (qlo, qhi), (lo, hi)))
    return y, np.minimum(ylo, y), np.maximum(yhi, y)


def refine(p, node):
    """Nothing to reread: P, Q and x come from the input's (tightened) interval."""


def backward(p, node, M, R, m):
    """[(input, signed rows, radii)] of the rows (M, R) at the output."""
    v, out = node.input[0], node.output[0]
    n, a, b, _ = lrn_params(node)
    kappa = 2 * a * b / n
    (pm, pr), (qm, qr), (xm, xr) = p.deriv[out]
    A = np.abs(M).reshape(-1, m, *M.shape[1:]).sum(0)
    R = np.zeros_like(A) if R is None else R
    signed = M * pm - kappa * xm * _window(M * qm, n, transpose=True)
    qa = np.abs(qm) + qr
    rad = A * pr + R * (pm + pr)
    rad = rad + kappa * (xr * _window((A + R) * qa, n, True) + np.abs(xm) * _window(A * qr + R * qa, n, True))
    return [(v, signed, rad)]


def magnitude(p, node, v):
    """|J| v ≤ P_hi v + κ Q_abs N(x_abs v) for v ≥ 0."""
    n, a, b, _ = lrn_params(node)
    (pm, pr), (qm, qr), (xm, xr) = p.deriv[node.output[0]]
    return (pm + pr) * v + 2 * a * b / n * (np.abs(qm) + qr) * _window((np.abs(xm) + xr) * v, n)


def magnitude_back(p, node, u):
    """u |J| ≤ u P_hi + κ x_abs Nᵀ(u Q_abs) for u ≥ 0: the transpose of :func:`magnitude`."""
    n, a, b, _ = lrn_params(node)
    (pm, pr), (qm, qr), (xm, xr) = p.deriv[node.output[0]]
    return (pm + pr) * u + 2 * a * b / n * (np.abs(xm) + xr) * _window((np.abs(qm) + qr) * u, n, transpose=True)
