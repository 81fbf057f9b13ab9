r"""ECnoise: the noise level of a function from a table of differences.

Evaluate f at m + 1 equally spaced points ``x + (i − m/2) δ p`` along a random unit
direction p. For smooth f the k-th differences ``Δᵏf`` shrink like δᵏ; for noise of
standard deviation σ they do not, and ``E[(Δᵏ f)²] = σ² (2k)!/(k!)²``. Hence

    σ_k = sqrt( γ_k · mean_i (Δᵏ f_i)² ),   γ_k = (k!)² / (2k)!,

and σ is read off the first order k ≥ 2 at which consecutive estimates agree within a
factor 4 and the differences change sign (noise, not a smooth trend). When most
differences are exactly 0 the outputs are quantised more coarsely than δ resolves:
the caller enlarges δ and tries again.
Reference: Moré & Wild, "Estimating computational noise", SIAM J. Sci. Comput. 33(3)
(2011) 1292–1314, Algorithm ECnoise.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ecnoise", "ORDERS"]

ORDERS = 6


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
