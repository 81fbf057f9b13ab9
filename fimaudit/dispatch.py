r"""Which method ``fisher_norm`` runs and what it costs, decided before any model call.

One cost model for :func:`fimaudit.plan` and the estimators, so a plan is what happens.
Per input, in rows of :mod:`fimaudit.ledger` (``Costs`` of the model):

* white box, ``exact``: 1 forward + C vjps when ``W = R J`` (n × C × d) fits
  ``memory_limit`` bytes (the direction is then free); otherwise 1 + 2C (B column by
  column, C vjps + C jvps) + 1 vjp for the direction;
* ``lanczos``/``power``: 1 forward + 2 per step (+1 vjp for the direction); under a budget
  the steps are what it leaves, ``⌊(B − 1 − direction)/2⌋``;
* jvp only (forward-mode AD or finite differences), ``exact``: set-up + ``column`` · d;
  ``sketch``: set-up + ``jvp`` · k probes, k = ⌊(B − set-up)/jvp⌋ ≤ d under a budget.

``auto`` is ``exact`` for C ≤ ``EXACT_MAX_OUTPUTS`` (white box) or d ≤ ``AUTO_EXACT_MAX_D``
(jvp only) when it fits the budget, else ``lanczos`` / ``sketch``. With ``tol`` (jvp only)
the sequential sketch is run instead of a fitting ``exact`` whenever it can cost fewer calls:
its first look, fixed by d, tol and the level (:func:`~fimaudit.blackbox.sequential.first_look`),
costs ``jvp · k₁`` after the set-up against exact's ``column · d``, and it never passes d
probes. Otherwise exact runs, whose interval is a point before the finite-difference error
widens it: its rows carry the halfwidth of that bracket and tol_met, like a sketch's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._validate import as_batch, choice, positive
from .errors import InvalidArgumentError
from .hints import say
from .ledger import costs_of
from .plugins import wrap

__all__ = ["Plan", "plan", "norm_plan", "white_box", "jvp_only", "holds_columns", "holds_jacobian", "EXACT_MAX_OUTPUTS"]

DEFAULT_MEMORY = 1 << 29  # bytes of W = R J held at once by the exact method

EXACT_MAX_OUTPUTS = 128
AUTO_EXACT_MAX_D = 1024
DEFAULT_PROBES = 256
NORM_METHODS = ("auto", "exact", "lanczos", "power")
JVP_ONLY_METHODS = ("auto", "exact", "sketch")


@dataclass
class Plan:
    """What ``fisher_norm`` would run on a batch, and what it would cost, before it runs."""

    method: str
    inputs: int
    calls_per_input: int  # an upper bound for iterative methods
    total_calls: int
    probes: int = None  # jvp directions per input (jvp-only models)
    note: str = ""
    steps: int = None  # iterative methods: the step cap
    after_setup: int = 0  # the fewest calls per input the method needs once the model is set up
    pilot_calls: int = 0  # calls per input a pilot spent to estimate the plan (fa.plan with tol)


def holds_columns(n, rows, d, itemsize, memory_limit):
    """How many of ``rows`` rows of W (n × rows × d) are held at once in ``memory_limit`` bytes."""
    return min(rows, max(1, int(memory_limit // max(1, n * d * itemsize))))


def holds_jacobian(n, C, d, itemsize, memory_limit):
    """How many of J's C rows (n × C × d, ``itemsize`` bytes each) white-box ``exact`` holds at
    once: beside each row it keeps that row of W = R J in float64, 8 bytes more per entry."""
    return holds_columns(n, C, d, itemsize + 8, memory_limit)


def _exact_white(C, held, direction):
    return 1 + C if held else 1 + 2 * C + int(bool(direction))


def white_box(n, C, d, itemsize, budget, method, *, return_direction=False, max_steps=None, memory_limit):
    """The plan for a model with vjps (C outputs, d inputs, batch of n)."""
    choice("method", method, NORM_METHODS)
    held = holds_jacobian(n, C, d, itemsize, memory_limit) >= C
    exact = _exact_white(C, held, return_direction)
    if method == "auto":
        method = "exact" if C <= EXACT_MAX_OUTPUTS and (budget is None or exact <= budget) else "lanczos"
    if method == "exact":
        if budget is not None and exact > budget:
            how = f"1 forward + C={C} vjps" if held else f"1 forward + C={C} vjps + C jvps, W does not fit memory_limit"
            raise InvalidArgumentError(
                f"method='exact' needs {exact} products per input ({how}"
                + ("" if held else " + 1 vjp for the direction")
                + f"), budget={budget}; pass {say('budget', exact)}"
                + ("" if held else f" or a larger {say('memory_limit')}")
                + f", or {say('method_lanczos')}"
            )
        note = "1 forward + C vjps" if held else "1 forward + C vjps + C jvps (W too large to hold)"
        return Plan("exact", n, exact, exact * n, note=note + ("" if held or not return_direction else " + 1 vjp"))
    if budget is None:
        steps = max_steps if max_steps is not None else (C if method == "lanczos" else 1000)
    else:
        steps = (int(budget) - 1 - int(bool(return_direction))) // 2
        if steps < 1:
            least = 3 + int(bool(return_direction))
            raise InvalidArgumentError(
                f"budget={budget} leaves no {method} step (each costs 2 products after 1 forward"
                + (" and 1 vjp for the direction" if return_direction else "")
                + f"); use budget >= {least}: pass {say('budget', least)}"
            )
        steps = steps if max_steps is None else min(steps, int(max_steps))
    if method == "lanczos":
        steps = min(steps, C)
    per = 1 + 2 * steps + int(bool(return_direction))
    return Plan(method, n, per, per * n, note="at most: 1 forward + (vjp + jvp) per step; stops early", steps=steps)


def jvp_only(costs, n, d, budget, method, tol=None):
    """The plan for a model with jvps only; ``costs`` its :class:`~fimaudit.ledger.Costs`.
    With ``tol`` a sketch may draw up to d probes (or what the budget affords) in rounds:
    the calls are then an upper bound, and :func:`plan` with ``tol`` estimates them."""
    choice("method", method, JVP_ONLY_METHODS)
    exact = costs.setup + costs.column * d
    if method == "auto":
        fits = d <= AUTO_EXACT_MAX_D if budget is None else exact <= budget
        if fits and tol is not None:  # the sketch may stop at its first look: run it where that costs less
            from .blackbox.sequential import LEVEL, first_look

            fits = costs.jvp * first_look(d, float(tol), 1.0 - LEVEL) >= costs.column * d
        method = "exact" if fits else "sketch"
    if method == "exact":
        if budget is not None and exact > budget:
            raise InvalidArgumentError(
                f"black-box exact needs {exact} model calls per input ({costs.setup} set-up + {costs.column}·d, "
                f"d={d}); budget={budget}: pass {say('budget', exact)}, or {say('method_sketch')}"
            )
        k, per, each = (
            d,
            exact,
            f"{costs.column} per column"
            + (" (steps h and 2h, extrapolated over kinks)" if costs.column != costs.jvp else ""),
        )
    else:
        if budget is None:
            k = d if tol is not None else min(d, DEFAULT_PROBES)
        else:
            k = (int(budget) - costs.setup) // costs.jvp
            if k < 2:
                raise InvalidArgumentError(
                    f"budget={budget} leaves fewer than 2 probes ({costs.setup} calls set up the products, "
                    f"{costs.jvp} per probe): use budget >= {costs.setup + 2 * costs.jvp}: "
                    f"pass {say('budget', costs.setup + 2 * costs.jvp)}"
                )
            k = min(k, d)
        per, each = costs.setup + costs.jvp * k, f"{costs.jvp} per probe"
    least = per - costs.setup if method == "exact" else 2 * costs.jvp
    note = f"{costs.setup} calls set up the products ({costs.setup_note}), {each}"
    if costs.extras and budget is None:
        note += f"; {costs.extras}"
    if costs.batch:
        b = costs.batch
        note += (
            f"; the model takes at most {b} row(s) per call (a graph's fixed batch of {b}, or batch_size=): at "
            f"least {-(-per * n // b)} session calls in all"
        )
    return Plan(method, n, per, per * n, k, note, after_setup=least)


def norm_plan(model, n, d, itemsize, C, budget, method, return_direction, max_steps, memory_limit, tol=None):
    """The plan for a wrapped model on a batch of n inputs of d entries (C: its outputs,
    needed with vjps only)."""
    if not model.has_vjp:
        return jvp_only(costs_of(model), n, d, budget, method, tol)
    return white_box(
        n,
        C,
        d,
        itemsize,
        budget,
        method,
        return_direction=return_direction,
        max_steps=max_steps,
        memory_limit=memory_limit,
    )


def plan(
    model,
    x,
    method="auto",
    budget=None,
    *,
    return_direction=False,
    max_steps=None,
    memory_limit=DEFAULT_MEMORY,
    batch_size=None,
    tol=None,
) -> Plan:
    """The method ``fisher_norm(model, x, method, budget, ...)`` would use and its cost in
    model calls per input, without running it: the same cost model the estimator charges
    its ledger by (``batch_size`` as given to it: whether W = R J fits ``memory_limit``
    depends on the batch). For a white-box model whose number of outputs is unknown, one
    forward pass on one input is made to learn it. With ``tol`` a jvp-only sketch's calls are
    at most those of d probes (or the budget's); ``fa.plan`` (:mod:`fimaudit.pilot`)
    estimates them from a pilot.

    >>> import numpy as np, fimaudit as fa
    >>> from fimaudit.testing import LinearModel
    >>> m = LinearModel(np.array([[1.0, 0.0], [0.0, 2.0]]))  # z = W x; at x = 0, p = (½, ½)
    >>> p = fa.plan(m, np.zeros((1, 2)))
    >>> p.method, p.calls_per_input  # 1 forward + C = 2 vjps
    ('exact', 3)
    """
    model = wrap(model)
    xp, x = as_batch(model, x)
    n, d = int(x.shape[0]), math.prod(x.shape[1:])
    if budget is not None:
        positive("budget", budget)
    C = None
    if model.has_vjp:
        C = model.num_outputs if model.num_outputs is not None else int(model.forward(x[:1, ...]).shape[1])
    itemsize = xp.finfo(x.dtype).bits // 8
    nb = n if batch_size is None or not model.has_vjp else min(n, int(positive("batch_size", batch_size)))
    p = norm_plan(model, nb, d, itemsize, C, budget, method, return_direction, max_steps, memory_limit, tol=tol)
    if nb != n:  # the plan of a full batch, for every input (a shorter last batch may cost less)
        p.inputs, p.total_calls = n, p.calls_per_input * n
    return p
