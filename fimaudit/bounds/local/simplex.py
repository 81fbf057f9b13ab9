r"""Bounds that use what a softmax's output always satisfies: along its axis, p ≥ 0 and Σ p = 1.

On the set ``P = {p : l ≤ p ≤ u, Σ_j p_j = 1}`` (l, u the output's intervals), a linear
function has its least value

``min_P Σ_j c_j p_j = Σ_j c_j l_j + Σ_j c_(j) f_j``, the spare mass 1 − Σ l put on the smallest
c first: with c_(1) ≤ c_(2) ≤ … and caps u_(j) − l_(j), ``f_j = clip(1 − Σ l − Σ_{k<j} cap_k, 0, cap_j)``

(the greedy solution of a fractional knapsack, optimal for this LP: moving mass from a larger
to a smaller c never raises the value). Where Σ l > 1 or Σ u < 1 the set is empty (no point of
the input set reaches here) and any number is a bound; the formula still returns one.

* Attention's product Y = P V (P a softmax's output along the contracted axis, V ∈ [V_l, V_u]):
  P ≥ 0 gives ``Y_if = Σ_j P_ij V_jf ≥ Σ_j P_ij (V_l)_jf``, so
  ``Y_if ∈ [min_P Σ_j p_j (V_l)_jf, max_P Σ_j p_j (V_u)_jf]``, the exact range over P × box of
  V, where midpoint-radius products (:mod:`.products`) ignore the sum and the signs.
* A CROWN row L at a softmax's output (:mod:`.crown`): ``Σ L ⊙ p ≥ Σ_rows min_P L·p``, a
  constant, taken in place of the mean-value line where it is the larger bound.

References: Dantzig, Operations Research 5, 1957 (the greedy optimum of the continuous
knapsack); Shi et al., ICLR 2020, "Robustness verification for Transformers" (bounds through
softmax and attention); Bonaert et al., PLDI 2021 (DeepT: the softmax sum constraint).
"""

from __future__ import annotations

import numpy as np

ELEMENTS = 1 << 24  # the broadcast (…, i, f, j) array of one attention product, at most


def least(c, lo, hi):
    """min Σ_j c_j p_j over {lo ≤ p ≤ hi, Σ_j p_j = 1} along the last axis (broadcast)."""
    c, lo, hi = np.broadcast_arrays(c, lo, hi)
    order = np.argsort(c, axis=-1)
    cs = np.take_along_axis(c, order, -1)
    cap = np.maximum(np.take_along_axis(hi - lo, order, -1), 0.0)
    spare = 1.0 - lo.sum(-1, keepdims=True)
    fill = np.clip(spare - (np.cumsum(cap, -1) - cap), 0.0, cap)
    value = (c * lo).sum(-1) + (cs * fill).sum(-1)
    slack = 1e-12 * ((np.abs(c) * (np.abs(lo) + cap)).sum(-1) + np.abs(cs).max(-1, initial=0.0))  # rounding
    return value - slack


def attention(pl, ph, vl, vh):
    """(low, high) of Y = P V over the last two axes (broadcast over the others), P ∈ [pl, ph]
    a softmax's output along its last axis, V ∈ [vl, vh]; None when too large to form."""
    vl, vh = (np.swapaxes(v, -1, -2)[..., None, :, :] for v in (vl, vh))  # (…, 1, f, j)
    pl, ph = pl[..., :, None, :], ph[..., :, None, :]  # (…, i, 1, j)
    shape = np.broadcast_shapes(pl.shape, vl.shape)
    if int(np.prod(shape)) > ELEMENTS:
        return None
    return least(vl, pl, ph), -least(-vh, pl, ph)
