r"""fisher_norm and fisher_trace: the public estimators (fisher_spectrum: :mod:`fimaudit.spectrum`).

For each input x of a batch, with logits z(x), Jacobian J = ∂z/∂x and the likelihood's
metric ``M = RᵀR`` (:mod:`fimaudit.likelihoods`), the input-space Fisher information is
``F(x) = Jᵀ M J`` (d × d, never formed). Its nonzero eigenvalues are those of the C × C
matrix ``B = R J Jᵀ Rᵀ``, so

* ``exact``: C vector–Jacobian products with the unit cotangents give the rows of J for the
  whole batch; then ``W = R J`` and ``B = W Wᵀ`` in float64 and a batched dense eigensolver —
  machine precision; the same rows give the first-order distance to the nearest decision
  boundary (:mod:`fimaudit.first_order`);
* ``lanczos``: Krylov iteration on B in output space, one vjp + one jvp per step for the
  whole batch, with a per-input residual bound (:mod:`fimaudit.linalg.lanczos`);
* ``power``: power iteration on B, for comparison;
* traces: ``exact`` (``tr F = ‖W‖_F²``), ``hutchinson`` (jvp only), ``hutchpp``.

A model with jvps and no vjps (forward-mode AD, or finite differences for a black box)
takes the jvp-only estimators of :mod:`fimaudit.blackbox.estimators`. The method and its
cost are decided before any model call (:mod:`fimaudit.dispatch`), and every evaluation
is charged to one :class:`~fimaudit.ledger.QueryLedger` per batch, so ``budget`` holds.
Reference for the quantity: "Measuring Model Robustness via Fisher Information"
(arXiv:2606.04767); the KL expansion ``KL(p(·|x) ‖ p(·|x+δ)) = ½ δᵀFδ + O(‖δ‖³)``
makes λ_max(F) the worst-case local KL per unit ‖δ‖².
"""

from __future__ import annotations

import math

import numpy as np

from . import dispatch
from ._array import normal, to_numpy
from ._assemble import assemble, batches, handle_nonconvergence
from ._operator import FisherOperator
from ._validate import choice, positive
from .blackbox import estimators as jvp_only
from .blackbox.fd_error import warn_noise
from .blackbox.sequential import warn_precision
from .dispatch import DEFAULT_MEMORY, EXACT_MAX_OUTPUTS, Plan, plan
from .errors import QueryBudgetExceeded
from .ledger import QueryLedger, costs_of
from .linalg import hutchinson, hutchpp, lanczos, power_iteration, top_eigh
from .plugins import wrap
from .results import FisherNormResult, TraceResult

__all__ = ["fisher_norm", "fisher_trace", "plan", "Plan", "EXACT_MAX_OUTPUTS"]

TRACE_METHODS = ("auto", "exact", "hutchinson", "hutchpp")
NORM_KEYS = ("value", "lower", "upper", "residual", "stderr", "converged", "steps", "direction", "trace")
FIRST_ORDER = ("first_order_distance", "first_order_class")


def _start(xp, op, seed):
    return normal(xp, op.logits, (op.n, op.C), seed)


def _iterative(xp, op, method, k, tol, max_steps, seed):
    q0 = _start(xp, op, seed)
    if method == "lanczos":
        return lanczos(xp, op.b_matvec, q0, k=k, max_steps=op.C if max_steps is None else max_steps, tol=tol)
    return power_iteration(xp, op.b_matvec, q0, max_steps=1000 if max_steps is None else max_steps, tol=tol)


def fisher_norm(
    model,
    x,
    method="auto",
    budget=None,
    tol=None,
    seed=0,
    *,
    return_direction=False,
    max_steps=None,
    batch_size=None,
    on_nonconvergence="raise",
    probes="random",
    memory_limit=DEFAULT_MEMORY,
    progress=None,
) -> FisherNormResult:
    """λ_max(F(x)) for every input of the batch x (shape (n, *input_shape)).

    ``method``: ``"auto"``, ``"exact"``, ``"lanczos"`` or ``"power"``. ``budget`` caps
    the model evaluations per input (forward + jvp/vjp vectors; for a black box, every row
    sent) and is never exceeded: a call that would pass it is not made, and
    :class:`~fimaudit.errors.QueryBudgetExceeded` carries the inputs finished so far.
    ``tol`` is a relative precision to stop at: for ``lanczos``/``power`` the relative
    residual (default 1e-4); for a jvp-only ``sketch`` the relative half-width
    ``(upper − lower)/(upper + lower)`` of its 95% interval, reached per input by drawing
    probes in rounds (:mod:`fimaudit.blackbox.sequential`); unset, the sketch draws its
    probes at once, as before. One name for both: each is the precision at which the method
    may stop, and no call sets both.
    ``on_nonconvergence="raise"`` raises :class:`~fimaudit.errors.NotConvergedError`
    carrying the partial result; ``"flag"`` returns it with ``converged`` False and a warning.
    ``return_direction=True`` adds the unit top eigenvector of F per input (of a sketch: its
    Ritz vector, the top eigenvector of F restricted to the probes' span, whose Rayleigh
    quotient is the Ritz value, ``ritz``). ``exact`` also
    returns ``first_order_distance`` and ``first_order_class`` (:class:`FisherNormResult`).
    ``progress``: a bar per batch and model-call round, None (default) when standard error
    is a terminal, True/False to force it (:mod:`fimaudit.progress`).

    jvp-only models (a wrapped callable, forward-mode AD) support ``exact`` (all d columns
    of J) and ``sketch`` (``probes="random"``, ``"dct"`` or a basis array). ``sketch``
    gives a certified lower bound (``lower``), an estimate (``value``) and a 95% interval
    (``upper``); finite-difference brackets are widened by the estimated error (``fd_error``).

    >>> import numpy as np, fimaudit as fa
    >>> from fimaudit.testing import LinearModel
    >>> m = LinearModel(np.array([[1.0, 0.0], [0.0, 2.0]]))  # z = W x; at x = 0, p = (½, ½)
    >>> r = fa.fisher_norm(m, np.zeros((1, 2)))  # λ_max = ¼ ‖w₁ − w₂‖² = 5/4: 1 forward + 2 vjps
    >>> round(float(r.value[0]), 12), r.method, int(r.queries[0])
    (1.25, 'exact', 3)
    >>> bb = fa.wrap(m.forward, input_shape=(2,), output="logits")  # the same model as a black box
    >>> r = fa.fisher_norm(bb, np.zeros((1, 2)), budget=40)
    >>> round(float(r.value[0]), 4), int(r.queries[0]) <= 40
    (1.25, True)
    """
    if tol is not None:
        positive("tol", tol)
    choice("on_nonconvergence", on_nonconvergence, ("raise", "flag"))
    if budget is not None:
        positive("budget", budget)
    parts, notes, missed, model = [], [], [], wrap(model)
    for xp, xb, lo, tracker in batches(model, x, batch_size, progress, "fisher_norm"):
        n, d = int(xb.shape[0]), math.prod(xb.shape[1:])
        itemsize = xp.finfo(xb.dtype).bits // 8
        ledger = QueryLedger(budget, n, meter=tracker)
        try:
            if not model.has_vjp:
                p = dispatch.norm_plan(
                    model, n, d, itemsize, None, budget, method, return_direction, max_steps, memory_limit, tol=tol
                )
                ledger.reserve = p.after_setup
                op = FisherOperator(model, xp, xb, offset=lo, ledger=ledger)
                m, part, note = jvp_only.norm(
                    xp, op, p, costs_of(model).jvp, probes, seed, return_direction, memory_limit, tol=tol
                )
                notes.append(note)
                if m == "exact":  # every column of J was formed: the first-order distances come with it
                    part.update(op.first_order)
                if part.get("tol_met") is not None:
                    fd = part.pop("fd_limited", np.zeros(n, bool))
                    miss = np.flatnonzero(~part["tol_met"])
                    missed += [(lo + int(i), float(part["halfwidth"][i]), bool(fd[i])) for i in miss]
            else:
                op = FisherOperator(model, xp, xb, offset=lo, ledger=ledger)
                p = dispatch.norm_plan(
                    model, n, d, itemsize, op.C, budget, method, return_direction, max_steps, memory_limit
                )
                wtol = 1e-4 if tol is None else tol
                m, part = p.method, _white_box_norm(xp, op, p, wtol, seed, return_direction, memory_limit)
        except QueryBudgetExceeded as err:
            if not ledger.refused:  # raised by the model itself (a service's own cap): its own partial
                raise
            done = assemble(FisherNormResult, parts) if parts else None
            raise QueryBudgetExceeded(
                f"{err} (inputs {lo}–{lo + n - 1}; .partial['result'] holds the {lo} inputs before them)",
                partial=dict(result=done, queries=ledger.spent.copy(), first_input=lo),
            ) from None
        keys = NORM_KEYS + FIRST_ORDER
        part = {key: part.get(key) for key in keys} | {k: v for k, v in part.items() if k not in keys}
        part.update(queries=op.queries, floored=op.floored, logits=op.logits)
        parts.append((xp, part, m, op.likelihood.name))
    warn_noise(notes)  # one warning for the call, at the line of the call
    warn_precision(missed, tol)
    return handle_nonconvergence(assemble(FisherNormResult, parts), on_nonconvergence, "fisher_norm")


def _white_box_norm(xp, op, plan, tol, seed, return_direction, memory_limit):
    if plan.method == "exact":
        B, W = op.gram(memory_limit)
        vals, vecs = top_eigh(xp, B, 1)
        value = op.cast(vals[:, 0])
        part = dict(
            value=value,
            lower=value,
            upper=value,
            residual=xp.zeros_like(value),
            converged=np.ones(op.n, bool),
            trace=op.cast(xp.sum(xp.linalg.diagonal(B), axis=-1)),
            **op.first_order,
        )
        if return_direction:
            part["direction"] = op.lift(xp.permute_dims(vecs, (0, 2, 1)), W)[:, 0]
        return part
    res = _iterative(xp, op, plan.method, 1, tol, plan.steps, seed)
    value, r = res.values[:, 0], res.residuals[:, 0]
    # θ + r bounds λ_max only once the Krylov space has found the top eigenvalue:
    # an unconverged input gets no finite upper bound.
    upper = xp.where(res.converged, value + r, xp.full_like(value, float("inf")))
    part = dict(
        value=value,
        lower=value,
        upper=upper,
        residual=r,
        converged=to_numpy(res.converged).astype(bool),
        steps=to_numpy(res.steps),
    )
    if return_direction:
        part["direction"] = op.lift(res.vectors)[:, 0]
    return part


def fisher_trace(
    model, x, method="auto", k=None, seed=0, *, batch_size=None, memory_limit=DEFAULT_MEMORY, progress=None
) -> TraceResult:
    """tr F(x) per input: ``exact`` (C vjps), ``hutchinson`` (k jvps, input-space
    Rademacher probes) or ``hutchpp`` (k products of B in output space).
    ``auto`` is exact for C ≤ EXACT_MAX_OUTPUTS, Hutch++ with k = 30 above.
    ``progress`` as for :func:`fisher_norm`.

    >>> import numpy as np, fimaudit as fa
    >>> from fimaudit.testing import LinearModel
    >>> m = LinearModel(np.array([[1.0, 0.0], [0.0, 2.0]]))  # z = W x; at x = 0, p = (½, ½)
    >>> round(float(fa.fisher_trace(m, np.zeros((1, 2))).value[0]), 12)  # rank 1: tr F = λ_max = 5/4
    1.25
    """
    if k is not None:
        positive("k", k)
    parts, model = [], wrap(model)
    for xp, xb, lo, tracker in batches(model, x, batch_size, progress, "fisher_trace"):
        choice("method", method, TRACE_METHODS + (() if model.has_vjp else ("sketch",)))
        op = FisherOperator(model, xp, xb, offset=lo, ledger=QueryLedger(None, int(xb.shape[0]), meter=tracker))
        if not model.has_vjp:
            m, value, stderr = jvp_only.trace(xp, op, method, k, seed, memory_limit, dispatch.AUTO_EXACT_MAX_D)
            part = dict(value=value, stderr=stderr)
        else:
            m = ("exact" if op.C <= EXACT_MAX_OUTPUTS else "hutchpp") if method == "auto" else method
            if m == "exact":
                B, _ = op.gram(memory_limit)
                value = op.cast(xp.sum(xp.linalg.diagonal(B), axis=-1))
                part = dict(value=value, stderr=xp.zeros_like(value))
            else:
                kk = int(k) if k is not None else 30
                if m == "hutchinson":
                    est = hutchinson(xp, op.quadratic, op.logits, op.d, kk, seed)
                else:
                    est = hutchpp(xp, op.b_matmat, op.logits, op.C, kk, seed)
                part = dict(value=est.value, stderr=est.stderr)
        part["queries"] = op.queries
        parts.append((xp, part, m, op.likelihood.name))
    return assemble(TraceResult, parts)
