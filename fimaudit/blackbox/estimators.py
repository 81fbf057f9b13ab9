r"""λ_max, trace and spectrum for models with jvps only (finite differences).

* ``exact``: all d columns of J by jvps (2d model calls per input, central), then
  ``W = R J`` and the dense C × C eigenproblem of ``W Wᵀ`` (with ``kinks="extrapolate"``:
  4d calls and ``2 W Wᵀ − W₂ W₂ᵀ``, W₂ the columns at twice the step);
* ``sketch``: k orthonormal probes (random, DCT or user-given), ``S = R J Qᵀ``; the
  certified lower bound ``λ_max(S Sᵀ)``, the scaled estimate and its jackknife
  interval (:mod:`fimaudit.linalg.sketch`);
* traces: ``exact`` (‖W‖_F²), ``hutchinson`` (Rademacher probes), ``sketch``
  (``(d/k)‖S‖_F²``, unbiased for Haar-random Q, exact at k = d).

Finite-difference error is propagated to the brackets: with noise σ (nats) and step h
every entry of W = R J carries an error of about ε = √λ_max(M) σ/h; to first order λ moves
by ``2 uᵀ(RE)w`` (one projection of the error, taken at 3ε) and to second order by at most
``‖RE‖² ≲ (ε(√C + √k))²``, so ``|Δλ| ≲ 6√λ ε + ε²(√C + √k)²``; a
relative truncation error τ of the products (measured by halving the step along one
direction, and taken three times over) adds ``(2τ + τ²) λ``. These are estimates, not
certificates: kinks that the check's direction does not cross can exceed them (seen: a
float32 ReLU CNN whose truth sat 0.03% above the widened upper end).

With ``kinks="extrapolate"`` (``B = 2 B(h) − B(2h)``) the first-order noise error is taken
√(2² + ½²) times and the second-order one 2 − ¼ times (independent errors at 2h, half those
at h), and the truncation term is replaced by the
randomness of the kinks that remain: which columns straddle a kink at h and at 2h is a draw,
so the extrapolation is right on average over columns, and its residual is estimated as
3·(Σ_j c_j²)^½ with ``c_j = (uᵀW_j)² − (uᵀW₂_j)²`` the column's share of the correction
along the top eigenvector u (measured on a ReLU/max-pool CNN: residuals 0.1–2.8 times that
root sum of squares).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._array import device, to_numpy
from ..errors import InvalidArgumentError, NoiseDominatesWarning
from ..linalg.dense import top_eigh
from ..linalg.sketch import gram_sketch
from .probes import dct_basis, fixed, random_orthonormal, user_basis

DEFAULT_PROBES = 256
AUTO_EXACT_MAX_D = 1024
NOISE_WARN = 0.1  # warn when the propagated FD error exceeds this fraction of λ_max


def probe_count(model, d, budget, method, spent=None):
    """(method, k) for a jvp-only model under ``budget`` model calls per input, of which
    ``spent`` (default: the nominal set-up) are already used."""
    per, o = model.calls_per_probe, (model.overhead if spent is None else int(spent))
    per_col = model.calls_per_column  # exact: more when extrapolating over kinks
    if method == "auto":
        if budget is None:
            method = "exact" if d <= AUTO_EXACT_MAX_D else "sketch"
        else:
            method = "exact" if o + per_col * d <= budget else "sketch"
    if method == "exact":
        if budget is not None and o + per_col * d > budget:
            raise InvalidArgumentError(
                f"black-box exact needs {o + per_col * d} model calls per input ({o} set-up + {per_col}·d, d={d}); "
                f"budget={budget}: raise the budget or use method='sketch'"
            )
        return "exact", d
    if budget is None:
        return "sketch", min(d, DEFAULT_PROBES)
    k = (int(budget) - o) // per
    if k < 2:
        raise InvalidArgumentError(
            f"budget={budget} leaves fewer than 2 probes ({o} calls set up the finite differences, "
            f"{per} per probe): use budget >= {o + 2 * per}"
        )
    return "sketch", min(k, d)


def _probes(xp, op, k, probes, seed):
    if isinstance(probes, str):
        if probes == "random":
            return random_orthonormal(xp, op.logits, op.n, k, op.d, seed), True
        if probes == "dct":
            return fixed(xp, op.logits, dct_basis(op.input_shape, k), op.n), False
        raise InvalidArgumentError(f"probes must be 'random', 'dct' or an array of basis vectors, got {probes!r}")
    B = user_basis(probes, op.d)
    return fixed(xp, op.logits, B[:k], op.n), False


def _noise_error(lam, eps_J, C, k, first=1.0, second=1.0):
    """|Δλ| from an error of about eps_J in every entry of the C × k matrix R J Qᵀ: first order
    one projection of it taken at 3σ, second order ‖R E‖² ≲ (eps_J(√C + √k))²; ``first`` and
    ``second`` scale the two when B is a combination of such Grams."""
    a = eps_J * (math.sqrt(C) + math.sqrt(k))
    return first * 2 * np.sqrt(lam) * 3 * eps_J + second * a * a


def fd_error(xp, op, value, k, top=None):
    """Per-input estimate of |Δλ| from finite differences (module docstring); ``top`` (n, C):
    the top eigenvector of B, used when B was extrapolated over kinks."""
    lin = op.lin
    noise = getattr(lin, "noise", None)
    if noise is None:
        return None
    eps_J = math.sqrt(op.likelihood.metric_norm_bound()) * (noise / lin.h)  # error of one entry of R J
    lam = np.maximum(to_numpy(value).astype(np.float64), 0)
    if op.extrapolated is not None:
        # 2 B(h) − B(2h), errors at 2h half those at h and independent of them
        err = _noise_error(lam, eps_J, op.C, k, first=math.sqrt(4 + 1 / 4), second=2 - 1 / 4)
        u, (W, W2) = top[:, None, :], op.extrapolated
        c = xp.matmul(u, W)[:, 0, :] ** 2 - xp.matmul(u, W2)[:, 0, :] ** 2  # (n, d): each column's correction
        err = err + 3.0 * to_numpy(xp.linalg.vector_norm(c, axis=-1)).astype(np.float64)
        return xp.asarray(err, dtype=value.dtype, device=device(value))
    noise_err = _noise_error(lam, eps_J, op.C, k)
    # truncation/kinks: a relative error τ in every product moves λ by about 2τλ; the
    # step-halving check measures τ along one direction, so it is taken 3 times over
    tau = 3.0 * getattr(lin, "truncation", 0.0)
    # m of the k probes left straddling a kink, with errors e_j: λ moves by about
    # 2√λ |uᵀR Σ_j v_j e_j| ≤ 2√λ ‖R‖ Σ_j |v_j| ‖e_j‖, and a top direction v spread over the k
    # probes has |v_j| ≈ 1/√k, so Σ_j |v_j| ‖e_j‖ ≈ √(m/k) (Σ_j ‖e_j‖²)^½ (an estimate, as is
    # the rest of this error)
    m = getattr(lin, "kink_count", 0.0)
    kink = math.sqrt(op.likelihood.metric_norm_bound()) * np.sqrt(getattr(lin, "kink_error2", 0.0) * m / max(k, 1))
    err = noise_err + (2 * tau + tau**2) * lam + 2 * np.sqrt(lam) * kink + kink**2
    return xp.asarray(err, dtype=value.dtype, device=device(value))


def norm(xp, op, method, budget, probes, seed, return_direction, memory_limit, offset=0):
    m, k = probe_count(op.model, op.d, budget, method, spent=op.queries)
    if budget is not None:  # kink repairs would spend calls the budget does not hold
        getattr(op.lin, "disable_repair", lambda: None)()
    if m == "exact":
        B, W = op.gram(memory_limit)
        vals, vecs = top_eigh(xp, B, 1)
        value = lower = upper = vals[:, 0]
        top = vecs[:, :, 0]
        trace = xp.sum(xp.linalg.diagonal(B), axis=-1)
        direction = op.lift(xp.permute_dims(vecs, (0, 2, 1)), W)[:, 0] if return_direction else None
        stderr = xp.zeros_like(value)
        name = "exact"
    else:
        Q, random = _probes(xp, op, k, probes, seed)
        S = op.sketch(Q)
        est = gram_sketch(xp, S, op.d, random)
        trace = None
        value, lower, upper, stderr = est.value, est.lower, est.high, est.stderr
        # the top eigenvector of Qᵀ Sᵀ S Q is Qᵀ Sᵀ u, u that of S Sᵀ
        direction = op.lift(est.vectors[:, None, :], xp.matmul(S, Q))[:, 0] if return_direction else None
        name = "sketch" if random else ("sketch-" + (probes if isinstance(probes, str) else "basis"))
        top = None
    err = fd_error(xp, op, value, k, top)
    part = dict(
        value=value,
        lower=lower,
        upper=upper,
        residual=stderr,
        converged=np.ones(op.n, bool),
        steps=None,
        direction=direction,
        trace=trace,
    )
    if err is not None:
        part["lower"] = xp.maximum(lower - err, xp.zeros_like(lower))
        part["upper"] = upper + err
        part.update(
            fd_step=np.asarray(op.lin.h),
            fd_noise=np.asarray(op.lin.noise),
            fd_error=to_numpy(err),
            nondeterministic=np.asarray(op.lin.nondeterministic),
        )
        _warn_noise(to_numpy(err), to_numpy(value), op.lin, offset)
    return name, part


def _warn_noise(err, value, lin, offset):
    bad = np.flatnonzero(err > NOISE_WARN * np.maximum(value, np.finfo(np.float64).tiny))
    if bad.size:
        tau = float(np.max(getattr(lin, "truncation", np.zeros(1))[bad]))
        cause = (
            f"the derivative changes by {tau:.1%} when the step is halved (kinks or curvature at step "
            f"{np.min(lin.h[bad]):.2g})"
            if 6 * tau > NOISE_WARN
            else f"measured output noise {np.max(lin.noise[bad]):.2g} nats at step {np.min(lin.h[bad]):.2g}"
        )
        warnings.warn(
            f"finite-difference error may exceed 10% of λ_max for inputs {(bad + offset)[:10].tolist()}: {cause} "
            "(see .fd_error); the brackets are widened accordingly. Rounded or quantised probabilities and "
            "TF32/bf16 serving cause noise; pass step= or scheme='richardson' to trade noise against truncation"
            + (
                "; for a ReLU/max-pool network, kinks='extrapolate' removes the kinks' bias from method='exact'"
                if 6 * tau > NOISE_WARN and not lin.model.extrapolate
                else ""
            ),
            NoiseDominatesWarning,
            stacklevel=4,
        )


def trace(xp, op, method, k, seed, memory_limit):
    from ..linalg import hutchinson

    if method in ("exact", "auto") and (method == "exact" or op.d <= AUTO_EXACT_MAX_D):
        B, _ = op.gram(memory_limit)
        value = xp.sum(xp.linalg.diagonal(B), axis=-1)
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
        f"trace method {method!r} needs vector-Jacobian products, which a black-box model does not have; "
        "use 'exact', 'hutchinson' or 'sketch'"
    )
