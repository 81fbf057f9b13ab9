"""The categorical likelihood: p = softmax(z), M = diag(p) − ppᵀ."""

from __future__ import annotations

import numpy as np

from .._array import device
from .._factor import Factor
from .._validate import _show
from .base import Likelihood, _tiny


class Categorical(Likelihood):
    """Readouts: prediction = arg-max class, confidence = its softmax probability, margin =
    top-1 minus top-2 logit.

    >>> from fimaudit.likelihoods import get_likelihood
    >>> import numpy as np
    >>> lik, z = get_likelihood("categorical"), np.array([[2.0, 0.0, 0.5]])
    >>> lik.predict(z).tolist(), np.round(lik.confidence(z), 4).tolist(), lik.margin(z).tolist()
    ([0], [0.7361], [1.5])
    """

    name = "categorical"

    def factor(self, xp, z):
        zmax = xp.max(z, axis=-1, keepdims=True)
        shifted = z - zmax
        lse = xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
        logp = shifted - lse
        p = xp.exp(logp)
        C = z.shape[-1]
        idx = xp.argmax(z, axis=-1, keepdims=True)
        top = xp.arange(C, device=device(z))[None, :] == idx
        rest = xp.sum(xp.where(top, xp.zeros_like(p), p), axis=-1)
        return Factor("categorical", xp.exp(0.5 * logp), 1.0, xp, p=p, top=top, rest=rest[:, None])

    def metric_rank(self, C):
        return C - 1

    def metric_norm_bound(self):
        return 0.5

    def min_outputs(self):
        return 2

    def natural_from_probs(self, xp, p):
        tiny = _tiny(xp, p)
        live = p > tiny
        q = xp.where(live, p, xp.ones_like(p))
        z = xp.log(xp.where(live, p, xp.full_like(p, tiny)))
        return z, xp.where(live, 1.0 / q, xp.zeros_like(p)), live

    def invalid_probs(self, p, tol):
        bad, why = super().invalid_probs(p, tol)
        sums = p.sum(axis=1)
        off = ~bad & (np.abs(sums - 1.0) > tol)
        if why is None and off.any():
            rows = np.flatnonzero(off)
            why = (
                f"probabilities in rows {_show(rows)} sum to {sums[rows[0]]:.6g}, not 1 (tolerance {tol}); "
                "for independent per-class probabilities use likelihood='bernoulli', for scores output='logits'"
            )
        return bad | off, why

    def predict(self, z):
        return np.argmax(z, axis=1)

    def confidence(self, z):
        return 1.0 / np.sum(np.exp(z - z.max(axis=1, keepdims=True)), axis=1)

    def margin(self, z):
        top2 = np.sort(z, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]
