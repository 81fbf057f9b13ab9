r"""ECnoise: the noise level of a function from a table of differences.

Evaluate f at m + 1 equally spaced points ``x + (i − m/2) δ p`` along a random unit
direction p. For smooth f the k-th differences ``Δᵏf`` shrink like δᵏ; for noise of
standard deviation σ they do not, and ``E[(Δᵏ f)²] = σ² (2k)!/(k!)²``. Hence

    σ_k = sqrt( γ_k · mean_i (Δᵏ f_i)² ),   γ_k = (k!)² / (2k)!,

and σ is read off the first order k ≥ 2 at which consecutive estimates agree within a
factor 4 and the differences change sign (noise, not a smooth trend). When most
differences are exactly 0 the outputs are quantised more coarsely than δ resolves:
δ is enlarged (10× on the first retry, 100× after) and the table measured again. For
such outputs each answer is off by up to half a quantum q, a rounding error of standard
deviation q/√12 (q: the smallest step between neighbours of the last table), which
floors σ: a table that moves by whole quanta can pass ECnoise's test with a σ far below it.
A table still mostly flat at the widest spacing leaves σ unknown (``unresolved``).

:func:`measure` runs the table per input at ``δ = √eps · s`` (s the input's RMS scale;
small, so that the table seldom straddles a kink of a piecewise-linear model, whose
differences would pass for noise), on log-outputs, and reads two further points at
``±SLOPE_REACH · δ`` for the slope |J p| the step rule needs. The table's centre point
repeats the base query: a different answer flags a nondeterministic model.
Reference: Moré & Wild, "Estimating computational noise", SIAM J. Sci. Comput. 33(3)
(2011) 1292–1314, Algorithm ECnoise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._array import device, namespace, normal

__all__ = ["ecnoise", "measure", "ORDERS", "NOISE_POINTS", "TABLE_ROWS"]

ORDERS = 6
NOISE_POINTS = 8  # the table has NOISE_POINTS + 1 points
NOISE_SPACING = 1  # δ in units of √eps × the input's RMS scale
SLOPE_REACH = 40  # the slope |J p| is read off f(x ± SLOPE_REACH·δ p)
TABLE_ROWS = NOISE_POINTS + 3  # rows per input of one measurement: the table and the two slope points
ATTEMPTS = 4  # the first table and up to three widened ones


def ecnoise(table):
    """Noise estimates from function tables.

    ``table``: float64 numpy array (n, m + 1, C) — per input, m + 1 equally spaced
    evaluations of C outputs. Returns (sigma (n, C), zero_fraction (n,)).
    """
    n, m1, C = table.shape
    sigma = np.full((n, C), np.nan)
    diffs = [table]
    for _ in range(min(ORDERS, m1 - 1)):
        diffs.append(np.diff(diffs[-1], axis=1))
    est = np.stack(
        [
            np.sqrt(math.factorial(k) ** 2 / math.factorial(2 * k) * np.mean(diffs[k] ** 2, axis=1))
            for k in range(1, len(diffs))
        ],
        axis=1,
    )  # (n, K, C), est[:, k-1] is σ_k
    K = est.shape[1]
    for k in range(1, K - 1):  # orders 2 .. K-1, needing k+1 and k+2 to compare
        block = est[:, k : k + 3, :]
        lo, hi = block.min(axis=1), block.max(axis=1)
        d = diffs[k + 1]
        sign_change = (d.max(axis=1) > 0) & (d.min(axis=1) < 0)
        ok = np.isnan(sigma) & (hi <= 4 * lo) & sign_change
        sigma = np.where(ok, est[:, k, :], sigma)
    # no consistent order: take the smallest estimate of orders ≥ 2 (an upper bound on noise)
    sigma = np.where(np.isnan(sigma), est[:, 1:, :].min(axis=1), sigma)
    zero_fraction = np.mean(diffs[1] == 0, axis=(1, 2))
    return sigma, zero_fraction


@dataclass
class NoiseProbe:
    """What one noise measurement found, per input."""

    direction: object  # (n, *shape) unit direction p of the table
    noise: np.ndarray  # σ (nats), raised to the repeat's difference / √2 for nondeterministic inputs
    slope: np.ndarray  # |J p|
    nondeterministic: np.ndarray  # the repeated base query was answered differently
    repeat: np.ndarray  # that difference (nats), largest over the outputs
    unresolved: np.ndarray  # most differences still exactly 0 at the widest spacing: noise unknown


def measure(send, x, base, scale, live, eps, seed, to_log):
    """ECnoise along a random direction per input. ``send(points, attempt)`` evaluates the
    model on ``TABLE_ROWS`` points per input (charging them first); ``base``: log-outputs
    at x (n, C) as float64; ``live``: outputs that carry a derivative; ``to_log`` maps raw
    outputs to float64 log-outputs."""
    xp, n, m = namespace(x), int(x.shape[0]), NOISE_POINTS
    p = normal(xp, x, x.shape, seed)
    p = p / xp.reshape(xp.linalg.vector_norm(xp.reshape(p, (n, -1)), axis=1), (n,) + (1,) * (x.ndim - 1))
    offsets = [i - m // 2 for i in range(m + 1)] + [SLOPE_REACH, -SLOPE_REACH]
    delta = scale * max(eps**0.5, 1e-7) * NOISE_SPACING
    nondeterministic, quantised = np.zeros(n, bool), np.zeros(n, bool)
    for attempt in range(ATTEMPTS):
        d = xp.reshape(xp.asarray(delta, dtype=x.dtype, device=device(x)), (n,) + (1,) * (x.ndim - 1))
        pts = xp.concat([x + (float(o) * d) * p for o in offsets], axis=0)
        out = to_log(send(pts, attempt)).reshape(TABLE_ROWS, n, -1).transpose(1, 0, 2)
        table, ends = out[:, : m + 1, :], out[:, m + 1 :, :]
        sigma, zeros = ecnoise(table)
        repeat = np.max(np.abs(table[:, m // 2, :] - base), axis=1)
        nondeterministic |= repeat > 0
        quantised |= zeros > 0.5
        if np.all(zeros <= 0.5):
            break
        # widened after the last table too: the slope below then divides by that δ (the step
        # rule's behaviour on coarsely quantised outputs depends on it)
        delta = np.where(zeros > 0.5, delta * (10.0 if attempt == 0 else 100.0), delta)
    ends = np.where(live, ends[:, 0, :] - ends[:, 1, :], 0.0)
    slope = np.sqrt(np.sum(ends**2, axis=1)) / (2 * SLOPE_REACH * delta)
    # outputs quantised more coarsely than the first table resolved: each answer is off by up
    # to half a quantum, the smallest step the last table shows (standard deviation q/√12)
    steps = np.abs(np.diff(table, axis=1))
    q = np.min(np.where(steps > 0, steps, np.inf), axis=1)  # (n, C)
    sigma = np.where(quantised[:, None] & np.isfinite(q), np.maximum(sigma, q / np.sqrt(12.0)), sigma)
    sigma = np.where(live, sigma, np.nan)
    noise = np.nanmedian(np.where(np.isfinite(sigma), sigma, np.nan), axis=1)
    noise = np.where(np.isfinite(noise), noise, 0.0)
    if np.any(nondeterministic):
        noise = np.maximum(noise, repeat / np.sqrt(2.0))
    return NoiseProbe(p, noise, slope, nondeterministic, repeat, zeros > 0.5)
