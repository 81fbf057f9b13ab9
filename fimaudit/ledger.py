r"""The query ledger: every model evaluation of one estimator call, charged per input
before it is made.

Budget promise: with ``budget=B``, no input of a batch is ever sent more than B rows
(model evaluations: forwards, jvp/vjp vectors, finite-difference points) by one
estimator call — a charge that would pass B is refused before the call it pays for.

* :class:`QueryLedger` holds the per-input spend and is the only place a budget is
  compared with anything. ``charge(rows)`` comes immediately before a model call;
  ``charge_setup`` is for data-dependent set-up rows (widening a noise table), which must
  not leave the estimator less than its minimum (``reserve``, from the plan);
  ``affordable`` is how many more products of a given cost fit (a sketch that takes fewer
  probes when the set-up took more).
* :class:`Costs` is a model's cost table (rows per input for set-up, per jvp or vjp
  vector, per column of J), read by :mod:`fimaudit.dispatch`, so a plan and a run
  count the same rows.
* :class:`MeteredModel` is the contract of a model that sends its own rows to another
  model (finite differences): it charges them itself, through the ledger it is given,
  and hands back its diagnostics. Every other model is metered here, one row per input
  for the forward pass and one per product vector (:func:`linearize`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import QueryBudgetExceeded

__all__ = ["QueryLedger", "Costs", "MeteredModel", "linearize", "costs_of"]


class QueryLedger:
    """Rows sent per input of a batch of ``n``; ``budget`` None counts without a cap.
    ``meter``: told of every charge (``meter.sent(rows)``, a :class:`fimaudit.progress.Tracker`)."""

    def __init__(self, budget, n, reserve=0, meter=None):
        self.budget = None if budget is None else int(budget)
        self.n = int(n)
        self.spent = np.zeros(self.n, dtype=np.int64)
        self.reserve = int(reserve)  # rows per input the estimator needs after the set-up
        self.refused = False  # whether a charge was refused
        self.meter = meter

    @property
    def bounded(self):
        return self.budget is not None

    def room(self):
        """Rows per input still allowed (the smallest over the batch); None without a budget."""
        return None if self.budget is None else int(self.budget - (self.spent.max() if self.n else 0))

    def affordable(self, wanted, each):
        """How many of ``wanted`` items of ``each`` rows per input still fit (at least 1, so
        that the charge for it names the shortfall)."""
        room = self.room()
        return int(wanted) if room is None else max(1, min(int(wanted), room // int(each)))

    def only(self, idx):
        """A ledger that books rows for the inputs ``idx`` (numpy ints) of this one; the other
        inputs send nothing (a sequential sketch's inputs that are still running)."""
        return _Only(self, np.asarray(idx, dtype=np.int64))

    def charge_setup(self, rows, what, then=0, fix=""):
        """A data-dependent set-up charge: refused when it would leave less than ``then`` rows
        per input (the set-up still to come) plus the estimator's ``reserve``."""
        self.charge(rows, what, keep=int(then) + self.reserve, fix=fix)

    def charge(self, rows, what="model calls", keep=0, fix=""):
        """Book ``rows`` (an int for every input, or one count per input) for the call about
        to be made; refuse, booking nothing, when that would leave less than ``keep`` rows
        per input under the budget. ``fix`` adds a way out to the refusal's message."""
        add = np.broadcast_to(np.asarray(rows, dtype=np.int64), (self.n,))
        if self.budget is not None:
            after = self.spent + add + int(keep)
            if np.any(after > self.budget):
                self.refused = True
                worst = int(np.argmax(after))
                raise QueryBudgetExceeded(
                    f"{what} would send {int(add[worst])} more rows to input {worst}, which has had "
                    f"{int(self.spent[worst])} of its budget={self.budget}"
                    + (f" and still needs {int(keep)}" if keep else "")
                    + "; nothing was sent: raise budget"
                    + (f" or {fix}" if fix else ""),
                    partial=dict(queries=self.spent.copy()),
                )
        self.spent = self.spent + add
        if self.meter is not None:
            self.meter.sent(int(add.sum()))


class _Only:
    """The rows of a subset of a ledger's inputs, booked on that ledger (zero for the others)."""

    def __init__(self, parent, idx):
        self.parent, self.idx, self.n = parent, idx, int(idx.size)

    @property
    def bounded(self):
        return self.parent.bounded

    def charge(self, rows, what="model calls", keep=0, fix=""):
        full = np.zeros(self.parent.n, dtype=np.int64)
        full[self.idx] = np.broadcast_to(np.asarray(rows, dtype=np.int64), (self.n,))
        self.parent.charge(full, what, keep, fix)


@dataclass(frozen=True)
class Costs:
    """Rows per input a model's products cost.

    ``setup``: before the first product (the forward pass; for finite differences also the
    noise table, the slope points and the step check). ``jvp``/``vjp``: per product vector
    (``vjp`` None when the model has none). ``column``: per column of J for ``exact``
    (``jvp``, or twice that when the Gram is extrapolated from two steps). ``setup_note``
    and ``extras`` describe the set-up and any data-dependent rows (spent only without a
    budget, or taken from the probes under one) for :func:`fimaudit.plan`; ``batch`` the
    most rows one call to the served model takes (a graph's fixed batch, or ``batch_size=``).
    """

    setup: int = 1
    jvp: int = 1
    vjp: int = 1
    column: int = 1
    setup_note: str = "1 forward"
    extras: str = ""
    batch: int = None  # at most this many rows per call to the served model (a graph's fixed batch)


class MeteredModel:
    """Mixin of a model that charges the rows it sends itself.

    ``linearize(x, ledger=None)`` returns a linearization whose every model call is charged
    to ``ledger`` first (a counting ledger of its own when None) and whose ``diagnostics``
    holds a typed record of how its products were made; ``costs()`` its :class:`Costs`.
    """

    def costs(self) -> Costs:
        raise NotImplementedError

    def linearize(self, x, ledger=None):
        raise NotImplementedError


def costs_of(model) -> Costs:
    """The cost table of any model: a metered model's own, else one row per evaluation."""
    if isinstance(model, MeteredModel):
        return model.costs()
    return Costs(vjp=1 if model.has_vjp else None)


def linearize(model, x, ledger):
    """``model`` at the batch x with every evaluation charged to ``ledger`` before it is made."""
    if isinstance(model, MeteredModel):
        return model.linearize(x, ledger=ledger)
    return _Charged(model, x, ledger)


class _Charged:
    """A plain model's linearization, one row per input for the forward pass and one per
    product vector, each charged before the product."""

    diagnostics = None

    def __init__(self, model, x, ledger):
        ledger.charge(1, "the forward pass")
        self.model, self.ledger = model, ledger
        self.inner = model.linearize(x)
        self.logits = self.inner.logits

    def jvp(self, v):
        self.ledger.charge(1, "a Jacobian-vector product")
        return self.inner.jvp(v)

    def vjp(self, u):
        self.ledger.charge(1, "a vector-Jacobian product")
        return self.inner.vjp(u)

    def jvp_many(self, V, inputs=None):
        """``inputs``: the rows of V are those inputs only (numpy ints); the model's own jvp runs
        on the whole batch, along zero vectors for the other inputs, which are charged nothing."""
        k = int(V.shape[1])
        if inputs is None:
            self.ledger.charge(k, f"{k} Jacobian-vector products")
            return self.inner.jvp_many(V)
        self.ledger.only(inputs).charge(k, f"{k} Jacobian-vector products")
        from ._array import device, namespace

        xp = namespace(V)
        ii = xp.asarray(inputs, device=device(V))
        full = xp.zeros((self.ledger.n, *V.shape[1:]), dtype=V.dtype, device=device(V))
        full[ii] = V
        return xp.take(self.inner.jvp_many(full), ii, axis=0)

    def vjp_many(self, U):
        self.ledger.charge(int(U.shape[1]), f"{int(U.shape[1])} vector-Jacobian products")
        return self.inner.vjp_many(U)
