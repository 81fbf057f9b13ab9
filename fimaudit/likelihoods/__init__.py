r"""Likelihoods: the output-space metric M(x), a stable factor R with M = RᵀR, the map from a
model's outputs to the natural parameters z, and the readouts an audit reports.

The likelihood owns the output mapping; it is stored once, on the model that produces the
outputs, and every wrapper reads it from there (:class:`fimaudit.Model`).

A likelihood turns logits ``z ∈ R^C`` into a distribution over outputs; its Fisher
metric in logit space is ``M(z)`` (docs/design.md):

============  ==========================  ======================  ============
name          distribution                M(z)                    λ_max(M) ≤
============  ==========================  ======================  ============
categorical   p = softmax(z)              diag(p) − p pᵀ          1/2
bernoulli     σ(z_c) independent          diag(σ(z)(1 − σ(z)))    1/4
gaussian      N(z, σ² I)                  I / σ²                  1/σ²
============  ==========================  ======================  ============

The input Fisher is ``F = Jᵀ M J = (R J)ᵀ (R J)`` and its nonzero spectrum is that of
the C×C matrix ``B = R J Jᵀ Rᵀ``. Any factor R with ``RᵀR = M`` works; we use ones that
are computed without ``log p`` and without forming ``M^{1/2}``:

* categorical: with ``s = √p = exp((z − logsumexp z)/2)``, ``R = diag(s)(I − 1pᵀ)``:
  ``RᵀR = (I − p1ᵀ) diag(p) (I − 1pᵀ) = diag(p) − 2ppᵀ + p(1ᵀp)pᵀ = diag(p) − p pᵀ``.
  The arg-max component is summed so that ``1 − p_{i*}`` is never formed by
  subtraction: saturated outputs keep full relative accuracy.
* bernoulli: ``R = diag(r)``, ``r = √(σ(z)σ(−z)) = exp(−|z|/2) / (1 + exp(−|z|))``.
* gaussian: ``R = I/σ``.

Saturated logits (±1e4) give p with exact zeros and a finite R: nothing overflows.

Models that output probabilities (``output="probs"``) are read through the likelihood's
natural parameters, whose Jacobian follows by the chain rule (:mod:`fimaudit._probs`):

* categorical: ``z = log p`` (softmax is invariant to a per-input constant, so log p is a
  valid logit vector; 1 − p is never formed), ``∂z/∂p = 1/p``;
* bernoulli: ``z = log p − log1p(−p)`` (the log-odds, accurate for p near 0 and near 1),
  ``∂z/∂p = 1/(p(1 − p))``;
* gaussian: refused — a Gaussian model outputs means, not probabilities.

An entry at exactly 0 or 1 (at or below the dtype's smallest normal number, or at or above 1)
has no finite natural parameter: it is clipped, its derivative set to 0, and counted
(``floored`` in the results).

Reference: Amari, *Information Geometry and Its Applications* (2016), §2 (Fisher
metric of exponential families; natural parameters); Martens, "New insights and
perspectives on the natural gradient method", JMLR 21 (2020), §9 (the output-space
factorisation).
"""

from __future__ import annotations

from ..errors import InvalidArgumentError
from .base import Likelihood
from .bernoulli import Bernoulli
from .categorical import Categorical
from .gaussian import Gaussian

__all__ = ["Likelihood", "Categorical", "Bernoulli", "Gaussian", "get_likelihood", "LIKELIHOODS"]

LIKELIHOODS = {"categorical": Categorical, "bernoulli": Bernoulli, "gaussian": Gaussian}


def get_likelihood(name, sigma: float = 1.0) -> Likelihood:
    """The likelihood called ``name`` (a Likelihood passes through unchanged).

    >>> get_likelihood("gaussian", sigma=2.0), get_likelihood("bernoulli").metric_norm_bound()
    (Gaussian(sigma=2.0), 0.25)
    """
    if isinstance(name, Likelihood):
        return name
    try:
        cls = LIKELIHOODS[name]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"unknown likelihood {name!r}: use one of {sorted(LIKELIHOODS)}") from None
    return cls(sigma)
