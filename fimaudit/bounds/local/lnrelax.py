r"""A linear relaxation of LayerNormalization for the backward pass of :mod:`.crown`.

Over a group of n values v: d = v − mean(v), w = 1/√(mean(d²) + ε) > 0, y = γ ⊙ d w + β. A row
L of y sees, per group, ``L·y = w s + L·β`` with ``s = (L ⊙ γ)·d``, linear in v:
``s = c·v`` with c = Lγ − mean(Lγ) (the centring moved onto the row). The forward pass of
:mod:`.norms` keeps w ∈ [w_l, w_h] (from the variance bounds) and d ∈ [d_l, d_h] on the input
set, so s ∈ [ℓ, u] = Σ_i [min, max](Lγ_i d_l,i, Lγ_i d_h,i). For fixed s, the least w s over
w ∈ [w_l, w_h] is f(s) = min(w_l s, w_h s), concave and piecewise linear; below it on [ℓ, u]:

* f itself where s keeps one sign (w_l s when ℓ ≥ 0, w_h s when u ≤ 0);
* else its chord through (ℓ, w_h ℓ) and (u, w_l u), a concave function lying above its chords.

Those lines treat w as free in its interval, a loss of first order in its width. Two more
candidates keep w's dependence on d. McCormick's planes for the product,

``w s ≥ w_l s + ℓ w − w_l ℓ`` and ``w s ≥ w_h s + u w − w_h u``

((w − w_l)(s − ℓ) ≥ 0 and (w_h − w)(u − s) ≥ 0), lose only a product of the two widths once w
is replaced by a line in d of the right side (below where its coefficient ℓ or u is ≥ 0, above
where it is < 0). With Q = mean(d²) + ε ∈ [Q_l, Q_h] = [1/w_h², 1/w_l²] and w = Q^(-1/2), convex
and decreasing in Q:

* below: the tangent of Q^(-1/2) at Q(x) (clipped to [Q_l, Q_h]), ``w ≥ Q_0^(-1/2) − ½ Q_0^(-3/2) (Q − Q_0)``,
  with Q above it replaced by the chords of d_i² on [d_l,i, d_h,i]:
  ``Q ≤ ((d_l + d_h)·d − Σ d_l d_h)/n + ε``;
* above: the chord of Q^(-1/2) on [Q_l, Q_h], slope k ≤ 0, ``w ≤ Q_l^(-1/2) + k (Q − Q_l)``, with Q
  below it replaced by the tangent of ‖d‖² at d(x): ``Q ≥ (2 d(x)·d − ‖d(x)‖²)/n + ε``.

Each candidate is a line in d below L·y − L·β; per row and group the one whose least value on
d's box is largest is kept. So ``L·y ≥ a·d + β₀ + L·β`` on the input set, and the walk goes on
to v with the row a − mean(a) ((a − ā)·v = a·d). Upper bounds are lower bounds of −L, as
everywhere in :mod:`.crown`.

References: Shi et al., ICLR 2020, "Robustness verification for Transformers" (linear bounds
through layer normalisation); McCormick, Math. Programming 10, 1976 (envelopes of bilinear
terms); Xu et al., NeurIPS 2020 (auto_LiRPA).
"""

from __future__ import annotations

import numpy as np

from ..rules import attr
from .layout import held
from .norms import _affine, _groups


def line_below(lo, up, wl, wh):
    """(α, β₀): ``α s + β₀ ≤ w s`` for every s ∈ [lo, up] and w ∈ [wl, wh] (0 < wl ≤ wh)."""
    cross = (lo < 0) & (up > 0)
    width = np.where(cross, up - lo, 1.0)
    chord = (wl * up - wh * lo) / width
    alpha = np.where(cross, chord, np.where(lo >= 0, wl, wh))
    b0 = np.where(cross, wh * lo - chord * lo - 1e-12 * (np.abs(wh * lo) + np.abs(wl * up)), 0.0)
    return alpha, b0


def w_lines(d0, eps, dl, dh, wl, wh):
    """Lines in d around w = Q^(-1/2), Q = mean(d²) + ε ∈ [1/wh², 1/wl²], per group:
    ``w ≥ e0 + e·d`` (the tangent of Q^(-1/2) at Q(x), then the chords of d_i² above Q) and
    ``w ≤ f0 + f·d`` (the chord of Q^(-1/2) over [1/wh², 1/wl²], then the tangent of ‖d‖² at
    d(x) below Q)."""
    n = d0.shape[-1]
    ql, qh = 1 / wh**2, 1 / wl**2
    q0 = np.clip((d0 * d0).sum(-1) / n + eps, ql, qh)  # any Q > 0 gives a tangent below
    slope = -0.5 * q0**-1.5
    e = slope[:, None] * (dl + dh) / n  # Q ≤ ((l + u)·d − Σ l u)/n + ε, and slope < 0
    e0 = q0**-0.5 + slope * (eps - (dl * dh).sum(-1) / n - q0)
    width = qh - ql
    chord = np.where(width > 0, (qh**-0.5 - ql**-0.5) / np.where(width > 0, width, 1.0), 0.0)
    f = chord[:, None] * 2 * d0 / n  # Q ≥ (2 d0·d − ‖d0‖²)/n + ε, and chord ≤ 0
    f0 = ql**-0.5 + chord * (eps - (d0 * d0).sum(-1) / n - ql)
    tiny = 1e-12 * (ql**-0.5 + np.abs(slope) * (qh + np.abs(dl * dh).sum(-1) / n) + np.abs(chord) * qh)  # rounding
    return (e0 - tiny, e), (f0 + tiny, f)


def lower(p, node, L):
    """(rows at the node's input, β): ``Σ L ⊙ y(x') ≥ Σ rows ⊙ v(x') + β`` on the input set."""
    g, out, v = p.net.g, node.output[0], node.input[0]
    m = L.shape[0]
    _, _, wm, wr = p.deriv[out]
    wl, wh = (wm - wr)[:, 0], (wm + wr)[:, 0]
    dl, dh = p.lines[out]
    Lg, n = _groups(node, g, L)
    gamma, beta = _affine(node, g, n)
    c = Lg * gamma
    lo = np.minimum(c * dl, c * dh).sum(-1)
    up = np.maximum(c * dl, c * dh).sum(-1)
    alpha, b0 = line_below(lo, up, wl, wh)
    coef, const = alpha[..., None] * c, b0  # candidates: lines coef·d + const below w s
    z = _groups(node, g, p.point[v])[0][0]
    (e0, e), (f0, f) = w_lines(z - z.mean(-1, keepdims=True), attr(node, "epsilon", 1e-5), dl, dh, wl, wh)
    for wk, s0 in ((wl, lo), (wh, up)):  # McCormick: w s ≥ wk s + s0 w − wk s0, then w by its line
        below = s0 >= 0
        k0, k = np.where(below, e0, f0), np.where(below[..., None], e, f)
        cand = wk[..., None] * c + s0[..., None] * k
        cc = s0 * k0 - wk * s0 - 1e-12 * (np.abs(s0 * k0) + np.abs(wk * s0))
        better = cc + np.minimum(cand * dl, cand * dh).sum(-1) > const + np.minimum(coef * dl, coef * dh).sum(-1)
        coef, const = np.where(better[..., None], cand, coef), np.where(better, cc, const)
    rows = coef - coef.mean(-1, keepdims=True)  # coef·d = (coef − mean)·v
    shift = const.sum(-1) + (Lg * beta).sum((-2, -1))
    return held(rows.reshape(m, *g.shape(v)), g, v), shift
