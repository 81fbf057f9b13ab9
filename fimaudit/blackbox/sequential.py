r"""A sequential Gram sketch: probes in rounds until each input's interval is narrow enough.

``fisher_norm(model, x, tol=t)`` on a jvp-only model draws orthonormal probes without
replacement (:func:`fimaudit.blackbox.probes.extend`), block after block, and looks at the
interval of :mod:`fimaudit.linalg.sketch_bounds` at probe counts fixed before the first
probe: k₁, then ×``GROWTH`` per look, ending at d (where the sketch is exact) or at what the
budget affords. An input stops at the first look where its relative half-width
``(high − low)/(high + low)`` is ≤ t, and sends no more rows; the others go on.

* **Coverage despite stopping when the data say so.** Look j spends ``α/2 · 6/(π² j²)`` on
  each end (α = 1 − level), so the interval holds at all looks at once with probability
  ≥ level (union bound, error spending), hence also at the data-dependent look where an input
  stops; see :mod:`fimaudit.linalg.sketch_bounds` and Howard et al., Ann. Statist. 49 (2021).
* **The first look** is the smallest k at which a rank-1 spectrum, the most favourable one,
  would typically meet t at look 1, so little error is spent on looks that cannot stop.
* **Budget.** Every round is trimmed to what the budget still allows the running inputs (the
  ledger charges before each call, and refuses what would pass it); an input whose interval is
  still wider than t when its budget or d is reached is reported with the half-width it
  reached (``tol_met`` False) and one :class:`~fimaudit.errors.PrecisionNotReachedWarning`
  for the call.
* **Probes.** ``random``: Haar rows only. ``dct``: the first half of look 1 are the
  lowest-frequency 2-D DCT images (their Ritz value is certified; they choose the Ritz
  direction), the rest Haar rows in their orthogonal complement.

The point ``value`` is the top eigenvalue of the unbiased Gram estimate
``S₁S₁ᵀ + (d − k₁)/(k − k₁) S₂S₂ᵀ`` clipped to the interval: an estimate (biased upward by
Jensen's inequality where the top of the spectrum is flat), not a bound.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._array import device, to_numpy
from ..errors import InvalidArgumentError, PrecisionNotReachedWarning
from ..hints import first_input, say
from ..linalg.sketch_bounds import _beta, _top, interval, relative_halfwidth, spend
from .probes import dct_basis, extend, fixed, random_orthonormal

__all__ = ["looks", "first_look", "sequential_norm", "warn_precision", "GROWTH", "LEVEL"]

GROWTH = 1.25  # probes at look j+1 / probes at look j
LEVEL = 0.95  # the intervals' confidence level; α = 1 − LEVEL is spent over the looks


def first_look(d, tol, alpha):
    """The smallest k ≥ 4 at which a rank-1 spectrum, with every Beta variable at its mean,
    would meet ``tol`` at look 1 (relative ends ``s/d + (1 − s/d) · mean/β_{1−a}`` and
    ``(k/d)/β_a``, s = k/2); d if none does. Fixed by d, tol and α alone, before any probe."""
    a = spend(alpha / 2, 1)

    def ok(k):
        if k >= d:
            return True
        s = k // 2
        low = s / d + (1 - s / d) * ((k - s) / (d - s)) / _beta(1 - a, k - s, d - k)
        high = (k / d) / _beta(a, k, d - k)
        return (high - low) / (high + low) <= tol

    lo, hi = 4, d
    if ok(lo):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def looks(d, tol, alpha, kmax=None):
    """Probe counts at the looks: k₁ = :func:`first_look`, then ×GROWTH, up to ``kmax``
    (default d), which is always the last look."""
    kmax = d if kmax is None else min(int(kmax), d)
    out, k = [], min(first_look(d, tol, alpha), kmax)
    while k < kmax:
        out.append(k)
        k = max(k + 1, math.ceil(k * GROWTH))
    return out + [kmax]


class _Blocks:
    """Probe rows (device) and sketch columns (host float64) drawn in blocks for a shrinking
    set of inputs; ``take(idx)`` concatenates the blocks' rows of those inputs."""

    def __init__(self, xp):
        self.xp, self.blocks = xp, []

    def add(self, idx, Q, S):
        self.blocks.append((idx, Q, S))

    def take(self, idx, what):
        parts = []
        for bidx, Q, S in self.blocks:
            pos = np.searchsorted(bidx, idx)
            if what == "S":
                parts.append(S[pos])
            else:
                parts.append(self.xp.take(Q, self.xp.asarray(pos, device=device(Q)), axis=0))
        if what == "S":
            return np.concatenate(parts, axis=2)
        return self.xp.concat(parts, axis=1) if len(parts) > 1 else parts[0]


def _draw(xp, op, blocks, idx, m, k_now, k1, basis, seed):
    """m new probe rows (len(idx), m, d) for the inputs idx: DCT rows first (``basis``), then Haar."""
    like = xp.take(op.logits, xp.asarray(idx, device=device(op.logits)), axis=0)
    rows = []
    if k_now < k1:
        take = min(m, k1 - k_now)
        rows.append(fixed(xp, like, basis[k_now : k_now + take], idx.size))
        m -= take
    if m > 0:
        prev = [blocks.take(idx, "Q")] if blocks.blocks else []
        Q = xp.concat(prev + rows, axis=1) if prev or rows else None
        if Q is None:
            rows.append(random_orthonormal(xp, like, idx.size, m, op.d, seed))
        else:
            rows.append(extend(xp, Q, m, seed))
    return rows[0] if len(rows) == 1 else xp.concat(rows, axis=1)


def sequential_norm(xp, op, tol, per_probe, probes, seed, kmax=None, level=None, direction=False):
    """Per input: value, ritz, low, high, halfwidth, probes used and tol_met (numpy), and u
    (n, C), by the rounds of the module docstring; ``kmax`` caps the probes (the plan's);
    ``level`` the confidence level (default ``LEVEL``).
    ``direction``: also the Ritz vector in input space, ``v = Qᵀ Sᵀ u`` (n, d, in Q's library,
    not normalised) at each input's last look: the top eigenvector of F restricted to span Q,
    whose Rayleigh quotient is the Ritz value (a certified lower bound, not λ_max)."""
    if not isinstance(probes, str) or probes not in ("random", "dct"):
        raise InvalidArgumentError(
            f"tol= with a jvp-only model draws probes='random' or 'dct' in rounds, got {probes!r}: pass one of "
            "those, or leave tol unset to sketch the given basis once"
        )
    if not 0 < float(tol) < 1:
        raise InvalidArgumentError(f"tol={tol} is a relative half-width for a jvp-only sketch: pass 0 < tol < 1")
    n, d, C, alpha = op.n, op.d, op.C, 1.0 - float(LEVEL if level is None else level)
    plan = looks(d, float(tol), alpha, kmax)
    k1 = plan[0] // 2 if probes == "dct" else 0
    basis = dct_basis(op.input_shape, k1) if k1 else None
    out = {key: np.zeros(n) for key in ("value", "ritz", "low", "high")}
    out["halfwidth"], out["k"], out["u"] = np.ones(n), np.zeros(n, np.int64), np.zeros((n, C))
    if direction:
        out["direction"] = xp.zeros((n, d), dtype=op.logits.dtype, device=device(op.logits))
    active, blocks, k_now = np.arange(n), _Blocks(xp), 0
    for j, target in enumerate(plan, 1):
        m = target - k_now
        if op.ledger.bounded:
            room = op.ledger.budget - int(op.ledger.spent[active].max())
            m = min(m, room // int(per_probe))
        if m <= 0:
            break
        Q = _draw(xp, op, blocks, active, m, k_now, k1, basis, seed + 7919 * j)
        S = to_numpy(op.sketch(Q, inputs=active)).astype(np.float64)
        blocks.add(active, Q, S)
        k_now += m
        S_all = blocks.take(active, "S")
        a = spend(alpha / 2, j)
        est = interval(S_all, d, a, a, k1=min(k1, k_now))
        scaled = S_all.copy()
        if k_now < d and k_now > k1:
            scaled[:, :, k1:] *= math.sqrt((d - k1) / (k_now - k1))
        plug = _top(scaled)[0]
        hw = relative_halfwidth(est.low, est.high)
        for key, val in (("ritz", est.ritz), ("low", est.low), ("high", est.high)):
            out[key][active] = val
        out["value"][active] = np.clip(plug, est.low, est.high)
        out["halfwidth"][active], out["k"][active], out["u"][active] = hw, k_now, est.u
        if direction:  # u·S are the coefficients of the Ritz vector in the rows of Q
            coef = xp.asarray(np.einsum("nc,nck->nk", est.u, S_all)[:, None, :], dtype=Q.dtype, device=device(Q))
            rows = xp.asarray(active, device=device(Q))
            out["direction"][rows] = xp.matmul(coef, blocks.take(active, "Q"))[:, 0]
        active = active[hw > tol]
        if not active.size:
            break
    out["tol_met"] = out["halfwidth"] <= tol
    return out


def warn_precision(missed, tol, stacklevel=3):
    """One PrecisionNotReachedWarning for a call; ``missed``: (input, half-width, fd) triples,
    fd True where the sketch met tol and the finite-difference error alone widened the bracket
    past it; the inputs numbered from the call's first (:func:`fimaudit.hints.first_input` is added)."""
    if not missed:
        return
    worst, first = max(h for _, h, _ in missed), [i + first_input() for i, _, _ in missed[:10]]
    fd = [i + first_input() for i, _, f in missed if f][:10]
    ran_out = len(missed) - sum(f for _, _, f in missed)
    causes = []
    if ran_out:
        causes.append(
            f"for {ran_out} the budget (or d) ran out: pass a larger {say('budget')} or a looser {say('tol')}, "
            "or use fa.plan(model, x, tol=...) to see the calls it needs"
        )
    if fd:
        causes.append(
            f"for {len(missed) - ran_out} (first: {fd}) the finite-difference error (see .fd_error) alone is wider "
            f"than tol, which more probes cannot narrow: pass {say('step')} or {say('richardson')}, or a looser "
            f"{say('tol')}"
        )
    warnings.warn(
        f"the interval of {len(missed)} inputs (first: {first}) is wider than tol={tol}: relative half-width up "
        f"to {worst:.3g} (see the rows' halfwidth and tol_met); " + "; ".join(causes),
        PrecisionNotReachedWarning,
        stacklevel=stacklevel,
    )
