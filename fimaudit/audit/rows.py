"""The rows of one chunk of an audit: each input's λ_max, bracket, readouts, first-order
distance, calls and status, from one estimator call per chunk; a chunk whose call fails
keeps its rows, each saying why it has no number."""

from __future__ import annotations

import time

import numpy as np

from .._array import to_numpy
from ..errors import FimauditError
from ..first_order import per_row
from ..fisher import fisher_norm, fisher_trace
from ..hints import numbered_from
from ..likelihoods import get_likelihood

__all__ = ["chunk", "numbered_chunk"]


def _readouts(m, z):
    """Prediction, confidence and margin of each row, read by the model's likelihood off the
    natural parameters z the estimator used (log p for a categorical model served as
    probabilities): :meth:`~fimaudit.likelihoods.Likelihood.predict` and the two after it.
    A Gaussian model has no confidence and no margin (None).

    >>> import numpy as np
    >>> from fimaudit.testing import LinearModel
    >>> _readouts(LinearModel(np.eye(2), likelihood="bernoulli"), np.array([[1.0, -3.0]]))
    ([0], [0.7310585786300049], [1.0])
    """
    lik = get_likelihood(m.likelihood, m.sigma)
    z = np.asarray(to_numpy(z), dtype=np.float64)
    conf, margin = lik.confidence(z), lik.margin(z)
    none = [None] * len(z)
    return lik.predict(z).tolist(), none if conf is None else conf.tolist(), none if margin is None else margin.tolist()


def chunk(m, X, y, lo, hi, method, budget, seed, top=0, progress=False, tol=None):
    """The rows of inputs lo..hi (with the first-order distance and class when the method was
    ``exact``); the ``top`` largest λ_max of the chunk carry their direction
    (``"direction"``), found in the same estimator call, so every row sent is on the budget.
    ``progress``: the audit's tracker (its model rows), or False. ``tol``: the sequential
    sketch's precision (black-box sketches); its rows then carry ``tol_met``, ``halfwidth``
    (the interval's relative half-width before the finite-difference error widens it) and
    ``probes``."""
    t0 = time.perf_counter()
    xb = X[lo:hi]
    try:
        opts = dict(on_nonconvergence="flag", return_direction=top > 0, progress=progress)
        r = fisher_norm(m, xb, method=method, budget=budget, tol=tol, seed=seed + lo, **opts)
        trace = None  # white-box models only: free with exact; a trace estimator when no budget caps the calls
        if m.has_vjp and (r.trace is not None or budget is None):
            trace = to_numpy(r.trace if r.trace is not None else fisher_trace(m, xb, progress=progress).value)
        prediction, confidence, margin = _readouts(m, r.logits)
        status = ["ok" if c else "not converged" for c in r.converged]
        vals, low, up = (to_numpy(a).astype(np.float64) for a in (r.value, r.lower, r.upper))
        first, first_class = per_row(r.first_order_distance, r.first_order_class, hi - lo)
        reached = _precision(r, hi - lo)
    except FimauditError as err:  # keep going: these rows say why they have no number
        msg = f"error: {type(err).__name__}: {err}"
        return [
            dict(
                index=i,
                label=None if y is None else int(y[i]),
                prediction=None,
                confidence=None,
                margin=None,
                lambda_max=None,
                lower=None,
                upper=None,
                trace=None,
                first_order_distance=None,
                first_order_class=None,
                queries=None,
                seconds=None,
                status=msg,
            )
            for i in range(lo, hi)
        ]
    seconds = (time.perf_counter() - t0) / (hi - lo)
    rows = []
    for j, i in enumerate(range(lo, hi)):
        rows.append(
            dict(
                index=i,
                label=None if y is None else int(y[i]),
                prediction=prediction[j],
                confidence=confidence[j],
                margin=margin[j],
                lambda_max=float(vals[j]),
                lower=float(low[j]),
                upper=float(up[j]),
                trace=None if trace is None else float(trace[j]),
                first_order_distance=first[j],
                first_order_class=first_class[j],
                queries=int(r.queries[j]),
                seconds=seconds,
                status=status[j],
                **reached[j],
            )
        )
    if top > 0 and r.direction is not None:
        d = to_numpy(r.direction)
        for j in np.argsort(-vals, kind="stable")[:top]:
            rows[j]["direction"] = d[j].astype(float).ravel().tolist()
    return rows


def numbered_chunk(m, X, y, lo, hi, *rest):
    """:func:`chunk` whose warnings name inputs by their place in X, not in the chunk."""
    with numbered_from(lo):
        return chunk(m, X, y, lo, hi, *rest)


def _precision(r, n):
    """Per row: tol_met, halfwidth and probes of a sequential sketch; nothing for other estimators."""
    if r.tol_met is None:
        return [{}] * n
    met, hw, k = (to_numpy(a) for a in (r.tol_met, r.halfwidth, r.probes))
    return [dict(tol_met=bool(met[j]), halfwidth=float(hw[j]), probes=int(k[j])) for j in range(n)]
