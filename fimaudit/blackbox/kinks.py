r"""Kinks of piecewise-linear models (ReLU, max-pool) in central differences.

A central difference whose two points straddle a kink mixes two slopes. Its three points
give both one-sided quotients ``D₊ = (f(x + h v̂) − f(x)) / h`` and
``D₋ = (f(x) − f(x − h v̂)) / h``; a probe is re-measured when, on the log scale the noise
is measured on, ``‖D₊ − D₋‖`` exceeds both 4 × the noise it alone would make (2σ√L/h, L
live outputs) and ``KINK_GAP`` of the quotient (a smooth curvature opens a gap of about
``h|f''|``, small beside the quotient). The re-measure takes both one-sided quotients at a
quarter step (2 rows). On the side without a kink both steps agree (the model is linear
there); on the kinked side they differ; a smooth curvature changes both alike. When one
side's change under the 4× refinement is below ¼ of the other's, its one-sided quotient
replaces the central one; otherwise the central one stays and half the one-sided gap joins
the error budget (``kink_error2``, ``kink_count`` of :class:`FDDiagnostics`): a kink closer
to x than the noise lets a step resolve leaves the derivative at x ambiguous from outside.
Probes not re-measured (under ``KINK_GAP``, or no re-measure at all: a sequential sketch's
rounds, a budget) whose one-sided quotients differ by more than the 4 × noise threshold and
``GAP_FLOOR`` of the quotient put half their gap, mapped by R into the units of W = R J,
into a second budget (``gap_error2``, ``gap_count``), at no extra row: across one kink at
t·h the central quotient is off by exactly that half gap. A smooth curvature opens a gap
``h|f''|`` that overstates the central error, O(h²); the floor keeps the smallest of those
out.

Kinks everywhere (deep ReLU/max-pool CNNs): a central quotient across a kink at distance
t·h mixes the slopes by weight (1 − t)/2; each probe straddles one with probability ∝ h and
the error it then makes does not depend on h, so the bias of the Gram
``G(h) = Σ_j D_j D_jᵀ`` is linear in h, and ``2 G(h) − G(2h)`` cancels it (Richardson
extrapolation on the Gram, not on the quotients, whose ``2D(h) − D(2h)`` leaves a positive
bias of the same order): ``kinks="extrapolate"``, for ``exact`` only.
Reference: Griewank & Walther, *Evaluating Derivatives*, 2nd ed. (2008), ch. 14
(piecewise-smooth functions); Richardson extrapolation: Nocedal & Wright, §8.1.
"""

from __future__ import annotations

import numpy as np

from .._array import device, to_numpy

__all__ = ["repair", "record_gaps", "KINK_GAP", "GAP_FLOOR"]

KINK_GAP = 0.01  # one-sided quotients further apart than this (relative) are re-measured
GAP_FLOOR = 1e-3  # one-sided quotients closer than this (relative) differ by curvature, not a kink


def logscale(xp, D, live, base, probs):
    """Quotients of raw outputs (m, k, C) on the log scale the noise is measured on."""
    if probs:
        tiny = xp.asarray(xp.finfo(base.dtype).smallest_normal, dtype=base.dtype, device=device(base))
        D = D / xp.maximum(base, tiny)[:, None, :]
    return xp.where(live[:, None, :], D, xp.zeros_like(D))


def _one_sided(xp, logits, live, probs, fp, fm, h, noise, live_norm):
    """One-sided quotients D₊, D₋ (n, k, C), their log-scale versions, the gap ‖l₊ − l₋‖
    and the noise ``alone`` would make, (n, 1)."""
    n, dev = int(logits.shape[0]), device(fp)
    hd = xp.reshape(xp.asarray(h, dtype=fp.dtype, device=dev), (n, 1, 1))
    f0 = logits[:, None, :]
    Dp, Dm = (fp - f0) / hd, (f0 - fm) / hd
    lp, lm = logscale(xp, Dp, live, logits, probs), logscale(xp, Dm, live, logits, probs)
    alone = xp.asarray((2.0 * noise * live_norm / h)[:, None], dtype=fp.dtype, device=dev)
    return Dp, Dm, lp, lm, xp.linalg.vector_norm(lp - lm, axis=2), alone


def _add_gaps(Dp, Dm, beyond, to_factor, diag):
    """Add the probes ``beyond`` (n, k bool) the noise to the unmeasured-kink budget, each
    with ``‖R (D₊ − D₋)/2‖²`` (``to_factor``: raw-output differences → rows of W = R J)."""
    if not np.any(beyond):
        return
    e = to_factor(to_numpy(Dp - Dm).astype(np.float64) / 2)
    diag.gap_error2 += np.sum(np.where(beyond, np.sum(e * e, axis=2), 0.0), axis=1)
    diag.gap_count += np.sum(beyond, axis=1)


def record_gaps(xp, logits, live, probs, fp, fm, h, noise, live_norm, to_factor, diag):
    """No re-measure (a sequential sketch's rounds, a budget): every probe whose one-sided
    quotients differ by more than 4 × the noise joins ``gap_error2``/``gap_count`` with its
    half gap, from the rows the central quotient already sent."""
    Dp, Dm, lp, lm, gap, alone = _one_sided(xp, logits, live, probs, fp, fm, h, noise, live_norm)
    size = xp.linalg.vector_norm(lp + lm, axis=2) / 2
    _add_gaps(Dp, Dm, to_numpy((gap > 4.0 * alone) & (gap > GAP_FLOOR * size)), to_factor, diag)


def repair(xp, x, logits, live, probs, D, fp, fm, Vhat, h, noise, live_norm, send, diag, to_factor):
    """Replace central quotients D (n, k, C) that straddle a kink by the steadier one-sided
    one. ``fp``/``fm``: outputs at x ± h v̂; ``send(points, rows)`` evaluates the model on
    points whose rows per input are ``rows`` (charging them first); ``diag`` collects the
    repairs. Quotients stay in the caller's array library; only the flagged probes' indices
    and the decisions cross to the host. Probes beyond the noise but under ``KINK_GAP`` are
    not re-measured; their half gaps join ``gap_error2``."""
    n, dev = int(x.shape[0]), device(D)
    Dp, Dm, lp, lm, gap, alone = _one_sided(xp, logits, live, probs, fp, fm, h, noise, live_norm)
    size = xp.linalg.vector_norm(lp + lm, axis=2) / 2
    beyond = to_numpy(gap > 4.0 * alone)
    beyond &= to_numpy(gap > GAP_FLOOR * size)
    flagged = beyond & to_numpy(gap > KINK_GAP * size)
    _add_gaps(Dp, Dm, beyond & ~flagged, to_factor, diag)
    rows, cols = np.nonzero(flagged)
    if rows.size == 0:
        return D
    m = rows.size
    per_input = 2 * np.bincount(rows, minlength=n)
    ir, ic = xp.asarray(rows, device=device(x)), xp.asarray(cols, device=device(x))
    q = h[rows] / 4
    hq = xp.reshape(xp.asarray(q, dtype=x.dtype, device=device(x)), (m,) + (1,) * (x.ndim - 1))
    V, xr = Vhat[ir, ic, ...], x[ir, ...]
    out = send(xp.concat([xr + hq * V, xr - hq * V], axis=0), per_input)
    diag.repaired += per_input // 2
    diag.repair_rows += per_input
    base = logits[ir, :]
    qd = xp.reshape(xp.asarray(q, dtype=D.dtype, device=dev), (m, 1))
    lpq = logscale(xp, ((out[:m, ...] - base) / qd)[:, None, :], live[ir, ...], base, probs)[:, 0, :]
    lmq = logscale(xp, ((base - out[m:, ...]) / qd)[:, None, :], live[ir, ...], base, probs)[:, 0, :]
    ep = to_numpy(xp.linalg.vector_norm(lp[ir, ic, :] - lpq, axis=1))  # each side's change under refinement
    em = to_numpy(xp.linalg.vector_norm(lm[ir, ic, :] - lmq, axis=1))
    g = to_numpy(gap[ir, ic]).astype(np.float64)
    plus, minus = ep < 0.25 * em, em < 0.25 * ep
    rest = ~(plus | minus)  # both steady yet apart, kinks on both sides, or strong curvature
    np.add.at(diag.kink_error2, rows[rest], g[rest] ** 2 / 4)
    np.add.at(diag.kink_count, rows[rest], 1)
    if not np.any(plus | minus):
        return D
    mask = np.zeros((n, int(D.shape[1]), 1), dtype=np.int8)
    mask[rows[plus], cols[plus]] = 1
    mask[rows[minus], cols[minus]] = -1
    mask = xp.asarray(mask, device=dev)
    return xp.where(mask == 1, Dp, xp.where(mask == -1, Dm, D))
