"""The Bernoulli (multi-label) likelihood: independent σ(z_c), M = diag(σ(1 − σ))."""

from __future__ import annotations

import math

import numpy as np

from .._factor import Factor
from .base import Likelihood, _tiny


class Bernoulli(Likelihood):
    """Independent labels. Readouts: prediction = the label most likely present (arg-max
    logit), confidence = its probability σ(z), margin = min_c |z_c|, the distance to flipping
    any one label's decision (z_c > 0).

    >>> from fimaudit.likelihoods import get_likelihood
    >>> import numpy as np
    >>> lik, z = get_likelihood("bernoulli"), np.array([[2.0, -0.5, 1.0]])
    >>> lik.predict(z).tolist(), np.round(lik.confidence(z), 4).tolist(), lik.margin(z).tolist()
    ([0], [0.8808], [0.5])
    """

    name = "bernoulli"

    def factor(self, xp, z):
        e = xp.exp(-xp.abs(z))
        return Factor("bernoulli", xp.exp(-0.5 * xp.abs(z)) / (1.0 + e), 1.0, xp)

    def metric_norm_bound(self):
        return 0.25

    def natural_from_probs(self, xp, p):
        tiny = _tiny(xp, p)
        live = (p > tiny) & (p < 1.0)
        q = xp.where(live, p, xp.full_like(p, 0.5))
        clipped = xp.where(p >= 1.0, xp.full_like(p, -math.log(tiny)), xp.full_like(p, math.log(tiny)))
        z = xp.where(live, xp.log(q) - xp.log1p(-q), clipped)  # 1 − q is exact for q ≥ ½, log1p below
        return z, xp.where(live, 1.0 / (q * (1.0 - q)), xp.zeros_like(p)), live

    def predict(self, z):
        return np.argmax(z, axis=1)

    def confidence(self, z):
        top = np.max(z, axis=1)
        return np.exp(-np.logaddexp(0.0, -top))  # σ(top) without overflow

    def margin(self, z):
        return np.min(np.abs(z), axis=1)
