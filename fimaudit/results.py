"""Typed results of the estimators.

Per-input arrays (values, brackets, residuals, directions) are in the caller's array
library, dtype and device; bookkeeping (queries, steps, converged flags) is numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["FisherNormResult", "TraceResult", "SpectrumResult"]


class _Result:
    def __len__(self):
        return int(self.value.shape[0]) if hasattr(self, "value") else int(self.values.shape[0])

    def __repr__(self):
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
                parts.append(f"{f.name}=<{type(v).__module__.split('.')[0]} {tuple(v.shape)}>")
            else:
                parts.append(f"{f.name}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(repr=False)
class FisherNormResult(_Result):
    """λ_max(F(x)) per input.

    ``value`` is the estimate; ``lower ≤ λ_max ≤ upper`` is its bracket (for ``exact``
    both equal the value up to round-off; for ``lanczos``/``power`` lower is the Ritz
    value, a certified lower bound, and upper adds the residual once converged — it is
    ``inf`` for an input that did not converge; for ``sketch`` [lower, upper] is an
    interval at 95% that holds for every spectrum, whose lower end is at least the Ritz
    value ``ritz``, certified in exact arithmetic; ``value`` is an estimate, not unbiased).
    Finite differences widen both ends by ``fd_error``. ``queries`` counts model
    evaluations per input: one forward plus one per jvp/vjp vector, or every row sent to a
    black-box model for that input (set-up, noise, probes, kink re-measures); it never exceeds the call's ``budget``.

    ``first_order_distance`` is the first-order (DeepFool-step) estimate of the ℓ2 distance to
    the nearest decision boundary, ``min_{j≠y} (z_y − z_j) / ‖∇ₓ(z_y − z_j)‖₂`` (for Bernoulli
    ``min_c |z_c| / ‖∇z_c‖₂``), and ``first_order_class`` the j attaining it
    (:mod:`fimaudit.first_order`); ``+inf`` where the gradient difference is zero. An estimate,
    not a certificate. Only ``exact`` forms the whole Jacobian that it needs: for the other
    methods both are None (NaN and −1 for their batches when ``auto`` mixed methods), and for
    a Gaussian model, which has no decision boundary, both are always None.
    """

    value: object
    lower: object
    upper: object
    queries: np.ndarray
    method: str
    likelihood: str
    residual: object = None  # exact, lanczos, power: ‖B u − θ u‖ of the returned eigenpair
    converged: np.ndarray = None
    steps: np.ndarray = None
    direction: object = None
    floored: np.ndarray = None  # classes at the probability floor (output="probs")
    fd_step: np.ndarray = None  # finite differences: the step per input (unit directions)
    fd_noise: np.ndarray = None  # finite differences: measured output noise per input (nats)
    fd_error: np.ndarray = None  # finite differences: estimated |Δλ| (noise, truncation, kinks); not a bound
    nondeterministic: np.ndarray = None  # finite differences: the repeated query was answered differently
    trace: object = None  # tr F(x), free with the exact methods (tr B); None otherwise
    logits: object = None  # (n, C) the logits the estimator used (log p for output="probs")
    stderr: object = None  # sketch: jackknife standard error of value; None otherwise
    first_order_distance: object = None  # exact: min_j (z_y − z_j)/‖∇(z_y − z_j)‖ (fimaudit.first_order)
    first_order_class: np.ndarray = None  # exact: the class j attaining it
    ritz: object = None  # sketch: λ_max(S Sᵀ), the Ritz value, certified up to fd_error; lower ≥ it
    halfwidth: np.ndarray = None  # black box with tol: (upper − lower)/(upper + lower), fd_error included
    tol_met: np.ndarray = None  # black box with tol: whether halfwidth ≤ tol (False: budget, d or fd_error)
    probes: np.ndarray = None  # sketch with tol: probes each input used


@dataclass(repr=False)
class TraceResult(_Result):
    """tr F(x) per input, with a standard error (0 for ``exact``)."""

    value: object
    stderr: object
    queries: np.ndarray
    method: str
    likelihood: str


@dataclass(repr=False)
class SpectrumResult(_Result):
    """The top-k eigenvalues of F(x) per input, descending, shape (n, k)."""

    values: object
    queries: np.ndarray
    method: str
    likelihood: str
    residuals: object = None
    converged: np.ndarray = None
    vectors: object = None  # (n, k, *input_shape), unit norm
    first_order_distance: object = None  # exact only, as in FisherNormResult
    first_order_class: np.ndarray = None
