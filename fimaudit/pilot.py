r"""``fa.plan``: the method and calls of a ``fisher_norm`` call before it runs, and with ``tol``
for a jvp-only sketch an estimate of the calls from a short pilot.

Without ``tol`` (or for a model with vjps, or when ``exact`` is chosen) this is
:func:`fimaudit.dispatch.plan`, which makes no model call for a jvp-only model. With ``tol``
a sequential sketch's calls depend on the spectrum, so a pilot sketch with ``PILOT_PROBES``
orthonormal probes is run on every input: it costs the set-up plus ``jvp`` · PILOT_PROBES
calls per input (2 × 32 + set-up for central differences), charged to no later call. Its
one-look interval has a relative half-width h₀; the half-width of a sketch of k probes scales
like ``√((1 − k/d)/k)`` (the spread of a Beta(k/2, (d−k)/2) fraction), so the planned probes
are those of the first look of :func:`fimaudit.blackbox.sequential.looks` where
``h₀ √((1 − k/d)/k) / √((1 − k₀/d)/k₀) ≤ tol``, for the slowest input, capped by the budget.
It is an estimate: the error spent at later looks and a pilot's own spread move it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from . import dispatch
from ._validate import as_batch
from .blackbox import sequential
from .dispatch import DEFAULT_MEMORY, Plan
from .errors import PrecisionNotReachedWarning
from .ledger import costs_of
from .plugins import wrap

__all__ = ["plan", "Plan", "PILOT_PROBES"]

PILOT_PROBES = 32


def plan(
    model,
    x,
    method="auto",
    budget=None,
    *,
    tol=None,
    return_direction=False,
    max_steps=None,
    memory_limit=DEFAULT_MEMORY,
    batch_size=None,
    seed=0,
) -> Plan:
    """What ``fisher_norm(model, x, method, budget, tol=tol, ...)`` would run and its calls per
    input (see :func:`fimaudit.dispatch.plan`); with ``tol`` for a jvp-only sketch the calls
    are estimated from a pilot sketch of ``PILOT_PROBES`` probes per input, whose cost is
    ``pilot_calls`` on the plan (module docstring).

    >>> import numpy as np, fimaudit as fa
    >>> from fimaudit.testing import LinearModel
    >>> m = LinearModel(np.array([[1.0, 0.0], [0.0, 2.0]]))
    >>> fa.plan(m, np.zeros((1, 2))).calls_per_input  # 1 forward + C = 2 vjps
    3
    """
    model = wrap(model)
    base = dispatch.plan(
        model,
        x,
        method,
        budget,
        return_direction=return_direction,
        max_steps=max_steps,
        memory_limit=memory_limit,
        batch_size=batch_size,
        tol=tol,
    )
    if tol is None or model.has_vjp or base.method != "sketch":
        return base
    from .fisher import fisher_norm  # on use: the pilot is a sketch

    costs = costs_of(model)
    d, kmax = math.prod(as_batch(model, x)[1].shape[1:]), base.probes
    k0 = min(PILOT_PROBES, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionNotReachedWarning)
        pilot = fisher_norm(
            model, x, method="sketch", budget=costs.setup + costs.jvp * k0, seed=seed + 1, batch_size=batch_size
        )
    low, high = np.asarray(pilot.lower, np.float64), np.asarray(pilot.upper, np.float64)
    h0 = float(np.max(np.where(high + low > 0, (high - low) / np.where(high + low > 0, high + low, 1), 0.0)))
    spread = lambda k: math.sqrt(max(1 - k / d, 0.0) / k)  # noqa: E731
    grid = sequential.looks(d, float(tol), 1.0 - sequential.LEVEL, kmax)  # the run's looks, at its level
    k = next((g for g in grid if h0 * spread(g) / spread(k0) <= tol), grid[-1])
    per = costs.setup + costs.jvp * k
    base.calls_per_input, base.total_calls, base.probes = per, per * base.inputs, k
    base.pilot_calls = int(pilot.queries.max())
    base.note += (
        f"; tol={tol}: about {k} probes estimated from a pilot of {k0} probes ({base.pilot_calls} calls per input, "
        f"spent by this plan), at most {kmax}"
    )
    return base
