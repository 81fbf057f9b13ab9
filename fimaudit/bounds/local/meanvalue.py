r"""Linear bounds past a node with no linear relaxation (a product, softmax or normalisation),
for the backward pass of :mod:`.crown`: the mean-value form, kept linear in the input.

For rows L (m, *shape of t) of a tensor t and the interval Jacobian ``J_mid ± J_rad`` of
``L·t`` over the input set B (:mod:`.backward`; it holds every ∂(L·t)/∂x at every point of B),
B convex and holding x gives, for every x' in B,

``L·t(x') = L·t(x) + ∫₀¹ J(x + s(x' − x)) ds (x' − x) ≥ L·t(x) + J_mid (x' − x) − J_rad |x' − x|``,

a line in x' (slope J_mid) less a constant: ``J_rad |x' − x| ≤ J_rad c`` with c = max(−a, b)
on the box [x + a, x + b], and on its intersection with an ℓ2 ball of radius ρ the exact maximum of
J_rad·e over 0 ≤ e ≤ c, ‖e‖₂ ≤ ρ (:func:`.ballbox.lowest`; at most ‖J_rad‖₂ ρ, Cauchy–Schwarz).
CROWN's walk back from a tensor then keeps the linear relaxations of every activation between
that tensor and the products or normalisations before it, and stops at those with this bound.

References: Shi et al., NeurIPS 2022, "Efficiently computing local Lipschitz constants of
neural networks via bound propagation" (bounds on Jacobians over the input set); Wang et al.,
NeurIPS 2021, "Beta-CROWN" and Xu et al., NeurIPS 2020 (auto_LiRPA) for linear bounds
composed over a graph.
"""

from __future__ import annotations

import numpy as np

from . import ballbox


class Loose(Exception):
    """The interval Jacobian at t is not finite: no bound from it."""


def lower(p, t, L):
    """(Λ, β) with ``Σ L ⊙ t(x') ≥ Λ·x' + β`` for every x' in the pass's input set."""
    m = L.shape[0]
    Jm, Jr = p.backward(t, L)
    if not (np.all(np.isfinite(Jm)) and np.all(np.isfinite(Jr))):
        raise Loose(t)
    slack = Jr @ np.maximum(-p.a, p.b)
    if p.ball is not None:  # max J_rad·e over 0 ≤ e ≤ c, ‖e‖₂ ≤ ρ (e = |x' − x|), exactly
        slack = np.minimum(slack, -ballbox.lowest(-Jr, 0.0, np.maximum(-p.a, p.b), p.ball)[0])
    at = (L * p.point[t]).reshape(m, -1).sum(1)
    return Jm, at - Jm @ p.x.reshape(-1) - slack
