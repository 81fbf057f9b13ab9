r"""The exact minimum of a linear function over an ℓ2 ball intersected with a box: per row λ of
Λ (m, n), with a ≤ 0 ≤ b (entries may be infinite) and ρ ≥ 0,

``min { λ·d : ‖d‖₂ ≤ ρ, a ≤ d ≤ b }``  and the minimiser d*.

The problem is convex and separable once the ball's multiplier ν ≥ 0 is fixed, so by the KKT
conditions d*(μ) = clip(−μ λ, a, b) with μ = 1/(2ν): the smallest μ ≥ 0 with ‖d*(μ)‖₂ = ρ, or
μ = ∞ (the box's minimising corner) when that corner lies inside the ball. ‖d*(μ)‖² is
piecewise quadratic in μ with breakpoints t_i = c_i / |λ_i| (c_i the distance to the face
−sign(λ_i) points at): on the segment past the k smallest breakpoints it is
μ² Σ_{unsaturated} λ_i² + Σ_{saturated} c_i², so μ is found exactly after one sort per row.

Both simpler bounds are special cases and never larger: the box alone gives Σ min(λ a, λ b),
the ball alone −‖λ‖₂ ρ (Cauchy–Schwarz). The value is returned less a rounding slack of a few
units in the last place of Σ |λ_i d_i|, so it stays a lower bound in floating point.

Reference: Boyd & Vandenberghe, "Convex Optimization" (2004), §5.5.3 (KKT conditions) — the
same water-filling form as the projection onto a box intersected with a ball.
"""

from __future__ import annotations

import numpy as np

SLACK = 1e-12  # relative to Σ |λ_i d_i|: rounding of the sort, the root and the sums


def lowest(Lam, a, b, rho=None):
    """(value (m,), d* (m, n)): ``min λ·d`` over {‖d‖₂ ≤ rho, a ≤ d ≤ b} per row λ of ``Lam``
    (a, b of length n, a ≤ 0 ≤ b; ``rho`` None: the box alone, which must then be finite where
    λ ≠ 0). Rows holding NaN give NaN."""
    Lam = np.atleast_2d(np.asarray(Lam, dtype=np.float64))
    a, b = np.broadcast_to(a, Lam.shape[1:]), np.broadcast_to(b, Lam.shape[1:])
    corner = np.where(Lam > 0, a, np.where(Lam < 0, b, 0.0))  # the box's minimiser, per coordinate
    if rho is None:
        d = corner
    else:
        mag = np.abs(Lam)
        cap = np.abs(corner)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(mag > 0, cap / np.where(mag > 0, mag, 1.0), np.inf)  # μ at which coordinate i saturates
        order = np.argsort(t, axis=1)
        ts = np.take_along_axis(t, order, 1)
        m2 = np.take_along_axis(mag, order, 1) ** 2
        c2 = np.take_along_axis(np.where(mag > 0, cap, 0.0), order, 1) ** 2
        free = np.cumsum(m2[:, ::-1], axis=1)[:, ::-1]  # Σ_{j ≥ k} λ_j²: unsaturated just before breakpoint k
        done = np.concatenate([np.zeros((len(Lam), 1)), np.cumsum(np.where(np.isfinite(c2), c2, 0.0), axis=1)], 1)
        with np.errstate(invalid="ignore", over="ignore"):
            reach = np.where(free > 0, ts**2 * free, 0.0) + done[:, :-1]  # ‖d*(t_k)‖² at each breakpoint
            reach = np.maximum.accumulate(reach, axis=1)  # (λ_k = 0 past an infinite cap would read as ‖c‖²)
            r2 = np.square(np.float64(rho))  # inf for a radius past 1e154: the box alone then
        k = np.sum(reach < r2, axis=1)  # breakpoints passed before the ball's boundary
        S = np.take_along_axis(free, np.minimum(k, Lam.shape[1] - 1)[:, None], 1)[:, 0]
        inside = (k == Lam.shape[1]) | (S <= 0)  # the box's corner lies inside the ball
        C = np.take_along_axis(done, np.minimum(k, Lam.shape[1])[:, None], 1)[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = np.where(inside, np.inf, np.sqrt(np.maximum(r2 - C, 0.0) / np.where(S > 0, S, 1.0)))
        with np.errstate(invalid="ignore"):
            d = np.where(np.isinf(mu)[:, None], corner, np.clip(-mu[:, None] * Lam, a, b))
        d = np.where(mag > 0, d, 0.0)
    with np.errstate(invalid="ignore"):
        prod = Lam * d
        value = prod.sum(1) - SLACK * np.abs(prod).sum(1)
    return value, d


def interval_range(jl, jh, a, b, rho):
    """(low, up) per row: ``low ≤ J·d ≤ up`` for every J with jl ≤ J ≤ jh elementwise and every
    d with ‖d‖₂ ≤ rho, a ≤ d ≤ b. Splitting d = d⁺ + d⁻ (d⁺ = max(d, 0), d⁻ = min(d, 0)) gives
    min_J J·d = jl·d⁺ + jh·d⁻, and ‖d⁺‖² + ‖d⁻‖² = ‖d‖², so the minimum over (d⁺, d⁻) in the
    ball of radius rho in 2n coordinates with 0 ≤ d⁺ ≤ b, a ≤ d⁻ ≤ 0 (:func:`lowest`) is a
    lower bound; the upper one is the same for −J. Where J straddles 0 this can exceed the
    magnitude bound |J·d| ≤ c·|d| ≤ max {c·e : ‖e‖₂ ≤ rho, 0 ≤ e ≤ max(−a, b)}, c = max(|jl|, |jh|),
    so the tighter of the two is returned."""
    a, b = np.broadcast_to(a, jl.shape[1:]), np.broadcast_to(b, jl.shape[1:])
    zero = np.zeros_like(a)
    lo2, hi2 = np.concatenate([zero, a]), np.concatenate([b, zero])
    low = lowest(np.concatenate([jl, jh], 1), lo2, hi2, rho)[0]
    up = -lowest(np.concatenate([-jh, -jl], 1), lo2, hi2, rho)[0]
    reach = -lowest(-np.maximum(np.abs(jl), np.abs(jh)), zero, np.maximum(-a, b), rho)[0]
    return np.maximum(low, -reach), np.minimum(up, reach)
