r"""Models that output probabilities, read through their likelihood's natural parameters.

The likelihood maps probabilities p to natural parameters ``z(p)`` and gives ``∂z/∂p`` entry
by entry (:meth:`fimaudit.likelihoods.Likelihood.natural_from_probs`: log p for a categorical
model, the log-odds log p − log1p(−p) for a Bernoulli one; a Gaussian one refuses). The
Jacobian of z follows by the chain rule, ``J_z = diag(∂z/∂p) J_p``, so every product with the
model's Jacobian is scaled by ``∂z/∂p``. An entry at exactly 0 or 1 (at or below the dtype's
smallest normal number, or at or above 1) is treated as constant there: its derivative is set
to 0 instead of overflowing. ``floored`` counts such entries per input, and results report it.
"""

from __future__ import annotations

import numpy as np

from ._array import device, to_numpy


class ProbsLinearization:
    """The linearization ``inner`` of a probability model (its ``logits`` are probabilities),
    read as the natural parameters of ``likelihood``: its ``logits`` and four products only.
    Costs and diagnostics stay on ``inner``, where the model that made them left them.

    >>> import numpy as np
    >>> from fimaudit.likelihoods import get_likelihood
    >>> from fimaudit.models import Linearization
    >>> from fimaudit.testing import LinearModel
    >>> m = LinearModel(np.array([[0.25, 0.0], [1.25, 0.0]]), likelihood="bernoulli", output="probs")  # p = W x
    >>> lin = ProbsLinearization(np, Linearization(m, np.array([[0.5, 0.0]])), get_likelihood("bernoulli"))
    >>> np.round(lin.logits, 4).tolist(), np.round(lin.jvp(np.array([[1.0, 0.0]])), 4).tolist()
    ([[-1.9459, 0.5108]], [[2.2857, 5.3333]])
    """

    def __init__(self, xp, inner, likelihood):
        self.xp = xp
        self.inner = inner
        self.logits, self.inv, self.live = likelihood.natural_from_probs(xp, inner.logits)
        self.floored = np.sum(~to_numpy(self.live), axis=1)

    def _scale(self, a, inputs=None):
        inv = (
            self.inv
            if inputs is None
            else self.xp.take(self.inv, self.xp.asarray(inputs, device=device(self.inv)), axis=0)
        )
        return a * (inv if a.ndim == 2 else inv[:, None, :])

    def jvp(self, v):
        return self._scale(self.inner.jvp(v))

    def jvp_many(self, V, **options):  # options: a finite-difference step factor, the inputs V is for
        return self._scale(self.inner.jvp_many(V, **options), options.get("inputs"))

    def vjp(self, u):
        return self.inner.vjp(self._scale(u))

    def vjp_many(self, U):
        return self.inner.vjp_many(self._scale(U))
