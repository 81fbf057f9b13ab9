r"""λ_max, trace and spectrum for models with jvps only: forward-mode AD or finite differences.

* ``exact``: all d columns of J by jvps, then ``W = R J`` and the dense C × C eigenproblem
  of ``W Wᵀ`` (finite differences with ``kinks="extrapolate"``: ``2 W Wᵀ − W₂ W₂ᵀ``, W₂
  the columns at twice the step, :mod:`fimaudit.blackbox.kinks`);
* ``sketch``: k orthonormal probes (random, DCT or user-given), ``S = R J Qᵀ``; the Ritz
  value ``λ_max(S Sᵀ)`` (certified lower bound), the scaled estimate and an interval valid
  for every spectrum (:mod:`fimaudit.linalg.sketch`); with ``tol``, probes in rounds until
  the interval's relative half-width is ≤ tol per input (:mod:`fimaudit.blackbox.sequential`);
* traces: ``exact`` (‖W‖_F²), ``hutchinson`` (Rademacher probes), ``sketch``
  (``(d/k)‖S‖_F²``, unbiased for Haar-random Q, exact at k = d).

With C outputs beyond the columns (or probes) held, the C × C Gram is never formed: its
top eigenpair and trace come from a thin QR of the columns (:func:`top_of_gram`) or of the
sketch (:mod:`fimaudit.linalg.sketch`), and the memory needed is checked against
``memory_limit`` (:class:`~fimaudit.errors.MemoryLimitError`) before it is allocated.

Finite-difference products widen every bracket by the error model of
:mod:`fimaudit.blackbox.fd_error`, read off the linearization's diagnostics record
(``op.fd``); products from forward-mode AD are exact and widen nothing.
"""

from __future__ import annotations

import math

import numpy as np

from .._array import device, to_numpy
from ..errors import InvalidArgumentError, MemoryLimitError
from ..linalg import hutchinson
from ..linalg.dense import top_eigh
from ..linalg.sketch import gram_sketch
from ..linalg.sketch_bounds import relative_halfwidth
from .fd_error import fd_error, noisy_inputs
from .probes import dct_basis, fixed, random_orthonormal, user_basis
from .sequential import sequential_norm

__all__ = ["norm", "trace", "gram", "top_of_gram"]


def _probes(xp, op, k, probes, seed):
    if isinstance(probes, str):
        if probes == "random":
            return random_orthonormal(xp, op.logits, op.n, k, op.d, seed), True
        if probes == "dct":
            return fixed(xp, op.logits, dct_basis(op.input_shape, k), op.n), False
        raise InvalidArgumentError(f"probes must be 'random', 'dct' or an array of basis vectors, got {probes!r}")
    B = user_basis(probes, op.d)
    return fixed(xp, op.logits, B[:k], op.n), False


def _check_memory(op, what, entries, memory_limit):
    """Refuse, before it is allocated, ``entries`` floats per input above ``memory_limit``."""
    need = op.n * entries * op.itemsize
    if need > memory_limit:
        raise MemoryLimitError(
            f"{what} needs {need} bytes for {op.n} inputs with C={op.C} outputs and d={op.d} entries, above "
            f"memory_limit={memory_limit} bytes: pass a larger memory_limit=, or a smaller batch_size= (inputs "
            "held at once)"
        )


def gram(xp, op, memory_limit):
    """B (n, C, C) from all d columns, W = R J, and the columns at h and 2h when the Gram
    was extrapolated over kinks (else None)."""
    pairs = 2 if op.fd is not None and op.fd.extrapolate else 1
    _check_memory(op, "the C × C Gram", op.C * (op.C + pairs * op.d), memory_limit)
    B, W = op.gram(memory_limit)
    if pairs == 1:
        return B, W, None
    W2 = op.columns(memory_limit, step_factor=2.0)
    return 2.0 * B - xp.matmul(W2, xp.permute_dims(W2, (0, 2, 1))), W, (W, W2)


def top_of_gram(xp, op, memory_limit):
    """``(λ_max, u, trace, W, pair)`` of B = A D Aᵀ with A = W = R J (D = I), or A = [W, W₂]
    and D = diag(2I, −I) when the Gram was extrapolated over kinks; u (n, C) is B's top
    eigenvector. B is not formed when C exceeds A's m columns: with the thin QR A = Q R,
    B = Q (R D Rᵀ) Qᵀ, so B's nonzero eigenvalues and its trace are those of the m × m
    matrix R D Rᵀ and its eigenvectors are Q w (Golub & Van Loan, *Matrix Computations*,
    4th ed., §5.2). The memory, C·m for A and Q plus m² (C² when B is formed), is checked
    against ``memory_limit`` before anything is allocated."""
    pairs = 2 if op.fd is not None and op.fd.extrapolate else 1
    m = pairs * op.d
    if op.C <= m:
        B, W, pair = gram(xp, op, memory_limit)
        vals, vecs = top_eigh(xp, B, 1)
        return vals[:, 0], vecs[:, :, 0], xp.sum(xp.linalg.diagonal(B), axis=-1), W, pair
    _check_memory(op, "the columns of R J and their QR factors", 2 * op.C * m + m * m, memory_limit)
    W = op.columns(memory_limit)
    pair = None if pairs == 1 else (W, op.columns(memory_limit, step_factor=2.0))
    A = W if pair is None else xp.concat(pair, axis=2)
    Q, Rf = xp.linalg.qr(A)
    sign = None if pair is None else xp.asarray([2.0] * op.d + [-1.0] * op.d, dtype=Rf.dtype, device=device(Rf))
    small = xp.matmul(Rf if sign is None else Rf * sign, xp.permute_dims(Rf, (0, 2, 1)))
    vals, vecs = top_eigh(xp, small, 1)
    u = xp.matmul(Q, vecs)[:, :, 0]
    return vals[:, 0], u, xp.sum(xp.linalg.diagonal(small), axis=-1), W, pair


def _sequential(xp, op, plan, per_probe, probes, seed, tol, memory_limit, return_direction):
    _check_memory(op, "the sequential sketch's probes", plan.probes * (op.d + op.C), memory_limit)
    r = sequential_norm(xp, op, tol, per_probe, probes, seed, kmax=plan.probes, direction=return_direction)
    value, ritz, low, high = (
        xp.asarray(r[key], dtype=op.logits.dtype, device=device(op.logits)) for key in ("value", "ritz", "low", "high")
    )
    extra = dict(ritz=ritz, halfwidth=r["halfwidth"], tol_met=r["tol_met"], probes=r["k"])
    if return_direction:  # the Ritz vectors, normalised and shaped like the inputs
        V = r["direction"][:, None, :]
        extra["direction"] = op.lift(xp.ones((op.n, 1, 1), dtype=V.dtype, device=device(V)), V)[:, 0]
    return value, low, high, extra, r["k"]


def norm(xp, op, plan, per_probe, probes, seed, return_direction, memory_limit, tol=None):
    """The part of a FisherNormResult for one batch, by ``plan`` (:mod:`fimaudit.dispatch`).
    A sketch takes the probes the plan names, fewer when the set-up took more rows than
    planned (a widened noise table) and the ledger leaves less room; with ``tol`` it draws
    them in rounds and stops each input once its interval is narrow enough."""
    extra = {}
    if plan.method == "sketch" and tol is not None:
        value, lower, upper, extra, ks = _sequential(
            xp, op, plan, per_probe, probes, seed, tol, memory_limit, return_direction
        )
        stderr, trace, pair, top, direction = None, None, None, None, extra.pop("direction", None)
        name, k = ("sketch" if probes == "random" else "sketch-" + probes), ks  # each input's probes
    elif plan.method == "exact":
        value, top, trace, W, pair = top_of_gram(xp, op, memory_limit)
        lower = upper = value
        direction = op.lift(top[:, None, :], W)[:, 0] if return_direction else None
        stderr, name, k = None, "exact", op.d
        if tol is not None:  # all d columns: the interval is a point before the finite-difference error
            extra = dict(halfwidth=np.zeros(op.n), tol_met=np.ones(op.n, bool), probes=np.full(op.n, op.d))
    else:
        k = op.ledger.affordable(plan.probes, per_probe)
        Q, random = _probes(xp, op, k, probes, seed)
        S = op.sketch(Q)
        est = gram_sketch(xp, S, op.d, random)
        value, lower, upper, stderr, trace, pair, top = est.value, est.low, est.high, est.stderr, None, None, None
        extra = dict(ritz=est.ritz)
        # the top eigenvector of Qᵀ Sᵀ S Q is Qᵀ Sᵀ u, u that of S Sᵀ
        direction = op.lift(est.vectors[:, None, :], xp.matmul(S, Q))[:, 0] if return_direction else None
        name = "sketch" if random else ("sketch-" + (probes if isinstance(probes, str) else "basis"))
    part = dict(
        value=value,
        lower=lower,
        upper=upper,
        stderr=stderr,
        converged=np.ones(op.n, bool),
        direction=direction,
        trace=trace,
        **extra,
    )
    diag = op.fd
    if diag is not None:
        err = fd_error(xp, diag, op.likelihood.metric_norm_bound(), op.C, value, k, top, pair)
        part["lower"] = xp.maximum(lower - err, xp.zeros_like(lower))
        part["upper"] = upper + err
        if "ritz" in part:
            part["ritz"] = xp.maximum(part["ritz"] - err, xp.zeros_like(lower))
        if tol is not None:  # the precision reached is that of the bracket reported, finite differences included
            sketch_met = part["tol_met"]
            part["halfwidth"] = relative_halfwidth(to_numpy(part["lower"]), to_numpy(part["upper"]))
            part["tol_met"] = part["halfwidth"] <= tol
            part["fd_limited"] = sketch_met & ~part["tol_met"]  # more probes cannot narrow these
        part.update(
            fd_step=np.asarray(diag.step),
            fd_noise=np.asarray(diag.noise),
            fd_error=to_numpy(err),
            nondeterministic=np.asarray(diag.nondeterministic),
        )
        return name, part, noisy_inputs(to_numpy(err), to_numpy(value), diag, op.offset, k)
    return name, part, None


def trace(xp, op, method, k, seed, memory_limit, auto_exact_max_d):
    """(method, value, stderr) of tr F for a jvp-only model."""
    if method in ("exact", "auto") and (method == "exact" or op.d <= auto_exact_max_d):
        value = top_of_gram(xp, op, memory_limit)[2]
        return "exact", value, xp.zeros_like(value)
    kk = int(k) if k is not None else min(op.d, 64)
    if method == "hutchinson":
        est = hutchinson(xp, op.quadratic, op.logits, op.d, kk, seed)
        return "hutchinson", est.value, est.stderr
    if method in ("sketch", "auto"):
        Q, _ = _probes(xp, op, min(kk, op.d), "random", seed)
        S = op.sketch(Q)
        per = xp.sum(S * S, axis=1) * (op.d / 1.0)  # (n, k): d‖A q_j‖², each unbiased
        value = xp.mean(per, axis=1)
        kq = int(per.shape[1])
        stderr = xp.std(per, axis=1, correction=1) / math.sqrt(kq) if kq > 1 else xp.full_like(value, float("inf"))
        if kq >= op.d:
            stderr = xp.zeros_like(value)
        return "sketch", value, stderr
    raise InvalidArgumentError(
        f"trace method {method!r} needs vector-Jacobian products, which a jvp-only model does not have; "
        "use 'exact', 'hutchinson' or 'sketch'"
    )
