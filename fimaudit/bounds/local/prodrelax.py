r"""A linear relaxation of products of two activations (MatMul, Mul) for the backward pass of
:mod:`.crown`.

With a ∈ a_m ± a_r and b ∈ b_m ± b_r on the input set (the intervals of the forward pass),

``a b = b_m a + a_m b − a_m b_m + (a − a_m)(b − b_m)``, with |(a − a_m)(b − b_m)| ≤ a_r b_r,

so a row L of Y = a·b (elementwise, broadcast) or Y = a b (matrix product over the last two
axes) gets ``Σ L ⊙ Y ≥ Σ (L b_m) ⊙ a + Σ (a_m L) ⊙ b − Σ L ⊙ (a_m b_m) − Σ |L| ⊙ (a_r b_r)``
(matrix form: rows ``L b_mᵀ`` to a and ``a_mᵀ L`` to b, and a_r b_r the matrix product of the
radii, which bounds |Σ_k δa_ik δb_kj|). The two lines are the mean of McCormick's two lower
(or upper) planes of the bilinear term, exact at the intervals' midpoints.

References: McCormick, Math. Programming 10, 1976 (envelopes of bilinear terms); Shi et al.,
ICLR 2020, "Robustness verification for Transformers" (linear bounds of attention products).
"""

from __future__ import annotations

import numpy as np

from .layout import full, unbroadcast


def lower(p, node, L):
    """([(input, rows)], β): ``Σ L ⊙ Y(x') ≥ Σ_inputs rows ⊙ input(x') + β`` on the input set."""
    g, out = p.net.g, node.output[0]
    m, rank = L.shape[0], len(g.shape(out))
    Lf = full(L, g, out)
    (la, ha), (lb, hb) = [tuple(full(d[i], g, i, rank) for d in (p.lo, p.hi)) for i in node.input[:2]]
    am, ar, bm, br = (la + ha) / 2, (ha - la) / 2, (lb + hb) / 2, (hb - lb) / 2
    if node.op_type == "Mul":
        ra, rb, mid, rad = Lf * bm, Lf * am, am * bm, ar * br
    else:
        t = lambda w: np.swapaxes(w, -1, -2)  # noqa: E731
        ra, rb, mid, rad = Lf @ t(bm), t(am) @ Lf, am @ bm, ar @ br
    shift = -(Lf * mid).reshape(m, -1).sum(1) - (np.abs(Lf) * rad).reshape(m, -1).sum(1)
    shift = shift - 1e-12 * (np.abs(Lf) * (np.abs(mid) + rad)).reshape(m, -1).sum(1)  # rounding
    a, b = node.input[:2]
    return [(a, unbroadcast(ra, g, a)), (b, unbroadcast(rb, g, b))], shift
