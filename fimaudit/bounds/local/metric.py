r"""A bound on sup λ_max(M(z)) over a box of logits zlo ≤ z ≤ zhi, for the local Fisher bound
``sup_{x' ∈ B} λ_max(F(x')) ≤ sup_{x' ∈ B} λ_max(M(z(x'))) · (sup_{x' ∈ B} ‖J(x')‖₂)²``
(F = Jᵀ M J, so λ_max(F) ≤ λ_max(M) ‖J‖₂²).

Categorical, M = diag(p) − p pᵀ with p = softmax(z) and p_i ∈ [p_i^lo, p_i^hi] on the box
(:func:`fimaudit.bounds.interval_rules.softmax_interval`):

* M ⪯ diag(p), since p pᵀ ⪰ 0, so λ_max(M) ≤ max_i p_i ≤ max_i p_i^hi;
* M ⪰ 0 (a covariance), so λ_max(M) ≤ tr M = 1 − Σ_i p_i² ≤ 1 − (max_i p_i)² ≤ 1 − (max_i p_i^lo)²
  (max_i p_i ≥ p_k ≥ p_k^lo for every k);
* λ_max(M) ≤ ½ for every p (the global bound, docs/bounds.md).

The minimum of the three holds on the box, is never above ½, and tends to 0 for a confident
prediction (p_top^lo → 1) — the regime where the global ½ is furthest off. Other likelihoods
use their global bound (:meth:`metric_norm_bound`).
"""

from __future__ import annotations

import numpy as np

from ...likelihoods import get_likelihood
from ..interval_rules import softmax_interval


def sup_metric_norm(likelihood, sigma, zlo, zhi):
    """Per row of the logit boxes (n, C): an upper bound on λ_max(M(z)) over the box."""
    lik = get_likelihood(likelihood, sigma)
    glob = lik.metric_norm_bound()
    if likelihood != "categorical":
        return np.full(zlo.shape[0], glob)
    plo, phi = softmax_interval((zlo, zhi), -1)
    top = np.clip(plo.max(axis=1), 0.0, 1.0)
    return np.minimum.reduce([np.full(zlo.shape[0], glob), phi.max(axis=1), 1.0 - top**2])
