r"""A linear relaxation of LayerNormalization for the backward pass of :mod:`.crown`.

Over a group of n values v: d = v − mean(v), w = 1/√(mean(d²) + ε) > 0, y = γ ⊙ d w + β. A row
L of y sees, per group, ``L·y = w s + L·β`` with ``s = (L ⊙ γ)·d``, linear in v:
``s = c·v`` with c = Lγ − mean(Lγ) (the centring moved onto the row). The forward pass of
:mod:`.norms` keeps w ∈ [w_l, w_h] (from the variance bounds) and d ∈ [d_l, d_h] on the input
set, so s ∈ [ℓ, u] = Σ_i [min, max](Lγ_i d_l,i, Lγ_i d_h,i). For fixed s, the least w s over
w ∈ [w_l, w_h] is f(s) = min(w_l s, w_h s), concave and piecewise linear; below it on [ℓ, u]:

* f itself where s keeps one sign (w_l s when ℓ ≥ 0, w_h s when u ≤ 0);
* else its chord through (ℓ, w_h ℓ) and (u, w_l u), a concave function lying above its chords.

So ``L·y ≥ α s + β₀ + L·β`` for every point of the input set, and the walk goes on to v with
the row α c. Upper bounds are lower bounds of −L, as everywhere in :mod:`.crown`.

References: Shi et al., ICLR 2020, "Robustness verification for Transformers" (linear bounds
through layer normalisation); Xu et al., NeurIPS 2020 (auto_LiRPA).
"""

from __future__ import annotations

import numpy as np

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
    rows = alpha[..., None] * (c - c.mean(-1, keepdims=True))
    shift = b0.sum(-1) + (Lg * beta).sum((-2, -1))
    return held(rows.reshape(m, *g.shape(v)), g, v), shift
