"""The Gaussian (regression) likelihood: N(z, σ²I), M = I/σ²."""

from __future__ import annotations

from .._factor import Factor
from ..errors import InvalidArgumentError
from .base import Likelihood


class Gaussian(Likelihood):
    """Outputs are means. Readouts: prediction = the mean of the first output (the first of C
    when there are several), no confidence, no margin (a regression has no decision to flip).

    >>> from fimaudit.likelihoods import get_likelihood
    >>> import numpy as np
    >>> lik = get_likelihood("gaussian", sigma=0.5)
    >>> lik.predict(np.array([[1.5, 2.0]])).tolist(), lik.confidence(None), lik.margin(None)
    ([1.5], None, None)
    """

    name = "gaussian"

    def factor(self, xp, z):
        return Factor("gaussian", None, 1.0 / self.sigma, xp)

    def metric_norm_bound(self):
        return 1.0 / self.sigma**2

    def check_output(self, output):
        if output == "probs":
            raise InvalidArgumentError(
                "a Gaussian likelihood reads a model's outputs as means, not probabilities: wrap a "
                "regression model with output='logits' (its outputs are the means), or pick "
                "likelihood='categorical' or 'bernoulli' for a model that returns probabilities"
            )

    def predict(self, z):
        return z[:, 0]

    def confidence(self, z):
        return None

    def margin(self, z):
        return None

    def __repr__(self):
        return f"Gaussian(sigma={self.sigma})"
