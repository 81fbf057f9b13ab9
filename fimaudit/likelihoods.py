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

import math

import numpy as np

from ._array import device
from ._factor import Factor
from ._validate import _show
from .errors import InvalidArgumentError

__all__ = ["Likelihood", "get_likelihood", "LIKELIHOODS"]


class Likelihood:
    """A likelihood: its name, the factor of its metric, its rank and norm bounds, the map
    from a model's outputs to natural parameters, and the readouts an audit reports."""

    name = ""

    def __init__(self, sigma: float = 1.0):
        if not (sigma > 0):
            raise InvalidArgumentError(f"sigma must be > 0 (the Gaussian noise scale), got {sigma!r}")
        self.sigma = float(sigma)

    def factor(self, xp, z) -> Factor:  # pragma: no cover - abstract
        raise NotImplementedError

    def metric_rank(self, C: int) -> int:
        """The largest possible rank of M (so of F) for C outputs."""
        return C

    def metric_norm_bound(self) -> float:
        """A bound on λ_max(M(z)) valid for every z."""
        raise NotImplementedError

    def min_outputs(self) -> int:
        return 1

    # --- outputs → natural parameters ------------------------------------------------
    def check_output(self, output):
        """Refuse an output kind ("logits" or "probs") this likelihood cannot read.

        >>> get_likelihood("gaussian").check_output("probs")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        fimaudit.errors.InvalidArgumentError: a Gaussian likelihood reads a model's outputs as means, ...
        """

    def natural_from_probs(self, xp, p):
        """``(z, dz_dp, live)`` for probabilities p (n, C): the natural parameters, their
        derivative in p entry by entry (0 where clipped) and the mask of entries not clipped.

        >>> import numpy as np
        >>> z, dz, live = get_likelihood("bernoulli").natural_from_probs(np, np.array([[0.5, 0.8, 1.0]]))
        >>> np.round(z[0, :2], 6).tolist(), np.round(dz[0], 6).tolist(), live[0].tolist()
        ([0.0, 1.386294], [4.0, 6.25, 0.0], [True, True, False])
        """
        self.check_output("probs")
        raise NotImplementedError

    def invalid_probs(self, p, tol):
        """``(bad, why)`` for probabilities p (numpy, (m, C)): the mask of rows this likelihood
        cannot read as probabilities within ``tol``, and what is wrong with them (None if none).

        >>> import numpy as np
        >>> bad, why = get_likelihood("categorical").invalid_probs(np.array([[0.5, 0.5], [0.9, 0.9]]), 1e-3)
        >>> bad.tolist(), why.split(";")[0]
        ([False, True], 'probabilities in rows [1] sum to 1.8, not 1 (tolerance 0.001)')
        """
        self.check_output("probs")
        finite = np.all(np.isfinite(p), axis=1)
        neg = finite & np.any(p < -tol, axis=1)
        over = finite & np.any(p > 1.0 + tol, axis=1)
        bad = ~finite | neg | over
        if not finite.all():
            why = f"the model returned NaN or infinite probabilities in rows {_show(np.flatnonzero(~finite))}"
        elif neg.any():
            why = (
                f"the model returned negative probabilities in rows {_show(np.flatnonzero(neg))} (min {p.min():.3g}); "
                "if it returns logits or log-probabilities, wrap it with output='logits'"
            )
        elif over.any():
            why = (
                f"the model returned probabilities above 1 in rows {_show(np.flatnonzero(over))} (max {p.max():.6g}); "
                "if it returns scores, wrap it with output='logits'"
            )
        else:
            why = None
        return bad, why

    # --- what an audit reports -------------------------------------------------------
    def predict(self, z):
        """The decision read off natural parameters z (numpy, (n, C)), one per row."""
        raise NotImplementedError

    def confidence(self, z):
        """The probability the model gives its decision, per row; None if it has none."""
        raise NotImplementedError

    def margin(self, z):
        """The smallest change of one logit that changes the decision, per row; None if none."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


def _tiny(xp, p):
    return float(xp.finfo(p.dtype).smallest_normal)


class Categorical(Likelihood):
    """Readouts: prediction = arg-max class, confidence = its softmax probability, margin =
    top-1 minus top-2 logit.

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


class Bernoulli(Likelihood):
    """Independent labels. Readouts: prediction = the label most likely present (arg-max
    logit), confidence = its probability σ(z), margin = min_c |z_c|, the distance to flipping
    any one label's decision (z_c > 0).

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


class Gaussian(Likelihood):
    """Outputs are means. Readouts: prediction = the mean of the first output (the first of C
    when there are several), no confidence, no margin (a regression has no decision to flip).

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
