r"""fisher_norm, fisher_trace, fisher_spectrum: the public estimators.

For each input x of a batch, with logits z(x), Jacobian J = ∂z/∂x and the likelihood's
metric ``M = RᵀR`` (:mod:`fimaudit.likelihoods`), the input-space Fisher information is
``F(x) = Jᵀ M J`` (d × d, never formed). Its nonzero eigenvalues are those of the C × C
matrix ``B = R J Jᵀ Rᵀ``, so

* ``exact``: C vector–Jacobian products for the whole batch give ``W = R J``; then
  ``B = W Wᵀ`` and a batched dense eigensolver (float64) — machine precision;
* ``lanczos``: Krylov iteration on B in output space, one vjp + one jvp per step for the
  whole batch, with a per-input residual bound (:mod:`fimaudit.linalg.lanczos`);
* ``power``: power iteration on B, for comparison;
* traces: ``exact`` (``tr F = ‖W‖_F²``), ``hutchinson`` (jvp only), ``hutchpp``.

``auto`` picks ``exact`` when C ≤ ``EXACT_MAX_OUTPUTS`` and ``lanczos`` above.
Reference for the quantity: "Measuring Model Robustness via Fisher Information"
(arXiv:2606.04767); the KL expansion ``KL(p(·|x) ‖ p(·|x+δ)) = ½ δᵀFδ + O(‖δ‖³)``
makes λ_max(F) the worst-case local KL per unit ‖δ‖².
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ._array import normal, to_numpy
from ._operator import FisherOperator
from ._validate import as_batch, choice, positive
from .blackbox import estimators as blackbox_estimators
from .errors import InvalidArgumentError, NotConvergedError, NotConvergedWarning
from .linalg import hutchinson, hutchpp, lanczos, power_iteration, top_eigh
from .models import wrap
from .results import FisherNormResult, SpectrumResult, TraceResult

__all__ = ["fisher_norm", "fisher_trace", "fisher_spectrum", "plan", "Plan", "EXACT_MAX_OUTPUTS"]

EXACT_MAX_OUTPUTS = 128
DEFAULT_MEMORY = 1 << 29  # bytes of W = R J held at once by the exact method
NORM_METHODS = ("auto", "exact", "lanczos", "power")
TRACE_METHODS = ("auto", "exact", "hutchinson", "hutchpp")


def _batches(n, batch_size):
    if batch_size is None:
        return [(0, n)]
    bs = int(positive("batch_size", batch_size))
    return [(lo, min(n, lo + bs)) for lo in range(0, n, bs)]


def _concat(xp, parts):
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _operators(model, x, batch_size):
    model = wrap(model)
    xp, x = as_batch(model, x)
    for lo, hi in _batches(int(x.shape[0]), batch_size):
        yield xp, FisherOperator(model, xp, x[lo:hi, ...], offset=lo)


def _start(xp, op, seed):
    return normal(xp, op.logits, (op.n, op.C), seed)


def _iterative(xp, op, method, k, tol, max_steps, seed):
    q0 = _start(xp, op, seed)
    if method == "lanczos":
        steps = op.C if max_steps is None else max_steps
        return lanczos(xp, op.b_matvec, q0, k=k, max_steps=steps, tol=tol)
    return power_iteration(xp, op.b_matvec, q0, max_steps=1000 if max_steps is None else max_steps, tol=tol)


def _resolve(method, C, budget, options):
    choice("method", method, options)
    if method == "auto":
        method = "exact" if C <= EXACT_MAX_OUTPUTS else "lanczos"
        if budget is not None and budget < C + 1:
            method = "lanczos"
    return method


def _steps_for_budget(budget, return_direction, max_steps):
    if budget is None:
        return max_steps
    steps = (int(budget) - 1 - int(bool(return_direction))) // 2
    if steps < 1:
        raise InvalidArgumentError(
            f"budget={budget} leaves no Lanczos step (each costs 2 products after 1 forward); use budget >= 3"
        )
    return steps if max_steps is None else min(steps, max_steps)


def _handle_nonconvergence(result, policy, what):
    if result.converged is None or bool(np.all(result.converged)):
        return result
    bad = np.flatnonzero(~result.converged)
    msg = (
        f"{what} did not converge for {len(bad)} of {len(result.converged)} inputs "
        f"(rows {bad[:10].tolist()}{'…' if len(bad) > 10 else ''}); their brackets "
        "[lower, upper] still hold: raise max_steps or budget, or loosen tol"
    )
    if policy == "raise":
        raise NotConvergedError(msg + "; the partial result is in .partial", partial=result)
    warnings.warn(msg, NotConvergedWarning, stacklevel=3)
    return result


def fisher_norm(
    model,
    x,
    method="auto",
    budget=None,
    tol=1e-4,
    seed=0,
    *,
    return_direction=False,
    max_steps=None,
    batch_size=None,
    on_nonconvergence="raise",
    probes="random",
    memory_limit=DEFAULT_MEMORY,
) -> FisherNormResult:
    """λ_max(F(x)) for every input of the batch x (shape (n, *input_shape)).

    ``method``: ``"auto"``, ``"exact"``, ``"lanczos"`` or ``"power"``. ``budget`` caps
    the model products per input (forward + jvp/vjp vectors). ``tol`` is the relative
    residual at which an iterative method stops. ``on_nonconvergence="raise"`` raises
    :class:`~fimaudit.errors.NotConvergedError` carrying the partial result;
    ``"flag"`` returns it with ``converged`` False and a warning.
    ``return_direction=True`` adds the unit top eigenvector of F per input.

    Black-box models (jvp only, e.g. a wrapped callable) support ``exact`` (all d
    columns of J) and ``sketch`` (``probes="random"``, ``"dct"`` or a basis array);
    ``budget`` then caps model calls per input and is never exceeded. ``sketch`` gives
    a certified lower bound (``lower``), an estimate (``value``) and a 95% interval
    (``upper``); all brackets are widened by the propagated finite-difference error.
    """
    positive("tol", tol)
    choice("on_nonconvergence", on_nonconvergence, ("raise", "flag"))
    if budget is not None:
        positive("budget", budget)
    parts = []
    for xp, op in _operators(model, x, batch_size):
        if not op.model.has_vjp:
            choice("method", method, ("auto", "exact", "sketch"))
            m, part = blackbox_estimators.norm(
                xp, op, method, budget, probes, seed, return_direction, memory_limit, offset=op.offset
            )
        else:
            m = _resolve(method, op.C, budget, NORM_METHODS)
            part = _white_box_norm(xp, op, m, budget, tol, seed, return_direction, max_steps, memory_limit)
        part.setdefault("trace", None)
        part.update(queries=np.full(op.n, op.queries, dtype=np.int64), floored=op.floored, logits=op.logits)
        parts.append((xp, part, m, op.likelihood.name))
    return _handle_nonconvergence(_assemble(FisherNormResult, parts), on_nonconvergence, "fisher_norm")


def _white_box_norm(xp, op, m, budget, tol, seed, return_direction, max_steps, memory_limit):
    if m == "exact":
        if budget is not None and budget < op.C + 1:
            raise InvalidArgumentError(
                f"method='exact' needs {op.C + 1} products per input (1 forward + C={op.C} vjps), "
                f"budget={budget}; raise the budget or use method='lanczos'"
            )
        B, W = op.gram(memory_limit)
        vals, vecs = top_eigh(xp, B, 1)
        value = vals[:, 0]
        part = dict(
            value=value,
            lower=value,
            upper=value,
            residual=xp.zeros_like(value),
            converged=np.ones(op.n, bool),
            steps=None,
            trace=xp.sum(xp.linalg.diagonal(B), axis=-1),
        )
        if return_direction:
            part["direction"] = op.lift(xp.permute_dims(vecs, (0, 2, 1)), W)[:, 0]
        return part
    steps = _steps_for_budget(budget, return_direction, max_steps)
    res = _iterative(xp, op, m, 1, tol, steps, seed)
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


def _assemble(cls, parts):
    xp = parts[0][0]
    methods = sorted({p[2] for p in parts})
    keys = parts[0][1].keys()
    out = {}
    for key in keys:
        vals = [p[1][key] for p in parts]
        if vals[0] is None:
            out[key] = None
        elif isinstance(vals[0], np.ndarray):
            out[key] = np.concatenate(vals)
        else:
            out[key] = _concat(xp, vals)
    return cls(method="+".join(methods), likelihood=parts[0][3], **out)


def fisher_trace(
    model, x, method="auto", k=None, seed=0, *, batch_size=None, memory_limit=DEFAULT_MEMORY
) -> TraceResult:
    """tr F(x) per input: ``exact`` (C vjps), ``hutchinson`` (k jvps, input-space
    Rademacher probes) or ``hutchpp`` (k products of B in output space).
    ``auto`` is exact for C ≤ EXACT_MAX_OUTPUTS, Hutch++ with k = 30 above."""
    if k is not None:
        positive("k", k)
    parts = []
    for xp, op in _operators(model, x, batch_size):
        if not op.model.has_vjp:
            choice("method", method, TRACE_METHODS + ("sketch",))
            m, value, stderr = blackbox_estimators.trace(xp, op, method, k, seed, memory_limit)
            parts.append(
                (
                    xp,
                    dict(value=value, stderr=stderr, queries=np.full(op.n, op.queries, dtype=np.int64)),
                    m,
                    op.likelihood.name,
                )
            )
            continue
        m = _resolve(method, op.C, None, TRACE_METHODS)
        if m == "exact":
            B, _ = op.gram(memory_limit)
            value = xp.sum(xp.linalg.diagonal(B), axis=-1)
            part = dict(value=value, stderr=xp.zeros_like(value))
        else:
            kk = int(k) if k is not None else 30
            if m == "hutchinson":
                est = hutchinson(xp, op.quadratic, op.logits, op.d, kk, seed)
            else:
                est = hutchpp(xp, op.b_matmat, op.logits, op.C, kk, seed)
            part = dict(value=est.value, stderr=est.stderr)
        part["queries"] = np.full(op.n, op.queries, dtype=np.int64)
        parts.append((xp, part, m, op.likelihood.name))
    return _assemble(TraceResult, parts)


def fisher_spectrum(
    model,
    x,
    k=5,
    method="auto",
    tol=1e-4,
    seed=0,
    *,
    return_vectors=False,
    max_steps=None,
    batch_size=None,
    on_nonconvergence="raise",
    memory_limit=DEFAULT_MEMORY,
) -> SpectrumResult:
    """The k largest eigenvalues of F(x) per input (descending), optionally with unit
    eigenvectors in input space. ``k`` may not exceed rank F (C − 1 for categorical,
    C otherwise, and at most d)."""
    positive("tol", tol)
    positive("k", k)
    choice("on_nonconvergence", on_nonconvergence, ("raise", "flag"))
    k = int(k)
    parts = []
    for xp, op in _operators(model, x, batch_size):
        if k > op.rank:
            raise InvalidArgumentError(
                f"k={k} exceeds the largest possible rank of F, {op.rank} "
                f"({op.likelihood.name} likelihood, C={op.C} outputs, d={op.d} inputs): use k <= {op.rank}"
            )
        m = _resolve(method, op.C, None, ("auto", "exact", "lanczos"))
        if not op.model.has_vjp and m != "exact":
            raise InvalidArgumentError("a black-box model's spectrum needs method='exact' (all d columns of J)")
        if m == "exact":
            B, W = op.gram(memory_limit)
            vals, vecs = top_eigh(xp, B, k)
            part = dict(values=vals, residuals=xp.zeros_like(vals), converged=np.ones(op.n, bool))
            U = xp.permute_dims(vecs, (0, 2, 1))
        else:
            res = _iterative(xp, op, "lanczos", k, tol, max_steps, seed)
            part = dict(values=res.values, residuals=res.residuals, converged=to_numpy(res.converged).astype(bool))
            U, W = res.vectors, None
        part["vectors"] = op.lift(U, W) if return_vectors else None
        part["queries"] = np.full(op.n, op.queries, dtype=np.int64)
        parts.append((xp, part, m, op.likelihood.name))
    return _handle_nonconvergence(_assemble(SpectrumResult, parts), on_nonconvergence, "fisher_spectrum")


@dataclass
class Plan:
    """What ``fisher_norm`` would run on a batch, and what it would cost, before it runs."""

    method: str
    inputs: int
    calls_per_input: int  # an upper bound for iterative methods
    total_calls: int
    probes: int = None  # jvp directions per input (black box)
    note: str = ""


def plan(model, x, method="auto", budget=None, *, return_direction=False, max_steps=None) -> Plan:
    """The method ``fisher_norm(model, x, method, budget)`` would use and its cost in
    model calls, without running it. For a white-box model whose number of outputs is
    unknown, one forward pass on one input is made to learn it."""
    model = wrap(model)
    xp, x = as_batch(model, x)
    n = int(x.shape[0])
    d = int(np.prod(x.shape[1:]))
    if budget is not None:
        positive("budget", budget)
    if not model.has_vjp:
        choice("method", method, ("auto", "exact", "sketch"))
        m, k = blackbox_estimators.probe_count(model, d, budget, method)
        each = model.calls_per_column if m == "exact" else model.calls_per_probe
        per = model.overhead + each * k
        note = (
            f"{model.overhead} calls set up finite differences (base point and noise; more when "
            f"outputs are quantised, taken from the probes under a budget), {each} per "
            + ("column (steps h and 2h, extrapolated over kinks)" if each != model.calls_per_probe else "probe")
        )
        if budget is None and getattr(model, "kinks", None) == "repair" and getattr(model, "scheme", "") == "central":
            note += "; plus 2 per probe re-measured across a kink (ReLU, max-pool; counted in queries)"
        fixed = getattr(getattr(model, "inner", None), "fixed_batch", None)
        if fixed:
            note += (
                f"; the model's graph has a fixed batch of {fixed}, so it is run {fixed} row(s) per session "
                f"call: {-(-per * n // fixed)} session calls in all"
            )
        return Plan(m, n, per, per * n, k, note)
    C = model.num_outputs if model.num_outputs is not None else int(model.forward(x[:1, ...]).shape[1])
    m = _resolve(method, C, budget, NORM_METHODS)
    if m == "exact":
        return Plan("exact", n, 1 + C, (1 + C) * n, note="1 forward + C vjps")
    steps = _steps_for_budget(budget, return_direction, max_steps)
    steps = min(C, steps) if steps is not None else (C if m == "lanczos" else 1000)
    per = 1 + 2 * steps + int(bool(return_direction))
    return Plan(m, n, per, per * n, note="at most: 1 forward + (vjp + jvp) per step; stops early on convergence")
