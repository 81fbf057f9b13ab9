r"""A confidence interval for λ_max(A Aᵀ) from a sketch S = A Qᵀ that holds for every spectrum.

Setting: A is C × d (A = R J), λ = λ_max(A Aᵀ) = ‖w*‖² with w* = Aᵀu* for a top unit
eigenvector u* of A Aᵀ. The rows of Q are orthonormal: the first ``k1`` are fixed (e.g.
low-frequency DCT images, possibly none) and the other k − k1 are Haar-distributed in the
orthogonal complement of the fixed ones, drawn one block after another without replacement.

* **Ritz value** ``λ_max(S Sᵀ) = max_{v ∈ span Q} vᵀFv/‖v‖² ≤ λ`` (F = AᵀA): a lower bound
  for any Q, certified up to the errors of the products.
* **Upper end.** For a fixed unit w and Haar rows Q₂ (m of them) in a subspace of dimension
  D containing the part P⊥w of w outside the fixed rows, ``‖Q₂ w‖² / ‖P⊥w‖² ~ Beta(m/2, (D−m)/2)``
  (the squared length of a uniformly random unit vector projected on m of D coordinates).
  With w = w*, which does not depend on the probes,
  ``λ = ‖Q₁w*‖² + ‖P⊥w*‖² = ‖Q₁w*‖² + ‖Q₂w*‖²/β ≤ λ_max(S₁S₁ᵀ + S₂S₂ᵀ/β)``, so with the
  a-quantile β_a of that Beta law ``λ ≤ λ_max(S₁S₁ᵀ + S₂S₂ᵀ/β_a)`` with probability ≥ 1 − a.
  Nothing about the spectrum enters: flat, repeated, rank-1 and geometric spectra are covered
  alike (the old jackknife interval assumed a separated top eigenvalue).
* **Lower end** (a second stage that reuses the Ritz direction). The top eigenvector û of the
  Gram of the first ``split`` probes is fixed before the later ones are drawn, and
  ``ûᵀAAᵀû ≤ λ``. Its energy ``‖Aᵀû‖²`` is ``‖S₍<s₎ᵀû‖²`` (known exactly) plus the part outside
  those probes, which the m = k − split later Haar probes measure with the Beta law above:
  ``λ ≥ ‖S₍<s₎ᵀû‖² + ‖S₍≥s₎ᵀû‖²/β_{1−a}(m/2, (d−k)/2)`` with probability ≥ 1 − a. (Re-measuring
  along the input-space Ritz vector would add nothing: it lies in span Q, where A is known.)
* **Several looks** (a sequential sketch that stops once the interval is narrow): look j spends
  ``a_j = a · 6/(π² j²)`` on each side (Σ_j a_j = a), so by the union bound the interval holds at
  every look at once, and therefore at a data-dependent stopping look, with probability
  ≥ 1 − 2a. This is the error-spending alternative to a confidence sequence (Howard, Ramdas,
  McAuliffe & Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
  Ann. Statist. 49 (2021) §1); the looks sit at probe counts fixed in advance.

At k = d the Beta laws are point masses at 1 and the interval is the exact value. The point
value of a sketch (the top eigenvalue of the scaled Gram, jackknife-corrected) is an estimate,
biased upward by Jensen's inequality for a spread top spectrum; these ends are what carries
the guarantee. Reference for the Beta law: Frankl & Maehara, J. Combin. Theory B 44 (1988)
(random projections of a fixed vector); Martinsson & Tropp, Acta Numerica 29 (2020) §4.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Interval", "interval", "spend", "relative_halfwidth"]


def spend(alpha: float, look: int) -> float:
    """The share ``alpha · 6/(π² look²)`` of ``alpha`` spent at look 1, 2, ... (they sum to alpha)."""
    return float(alpha) * 6.0 / (math.pi**2 * int(look) ** 2)


def _beta(q, m, rest):
    """q-quantile of Beta(m/2, rest/2); 1 when nothing is left unseen (rest = 0)."""
    if rest <= 0:
        return 1.0
    if m <= 0:
        return 0.0
    from scipy import stats  # imported on use: scipy.stats costs seconds at start-up

    return float(stats.beta.ppf(q, m / 2.0, rest / 2.0))


def _top(T):
    """Top eigenpair of T Tᵀ (T: n × C × m), via the thin QR of T when C > m."""
    if T.shape[-1] == 0:
        return np.zeros(T.shape[0]), np.zeros(T.shape[:2])
    if T.shape[-2] <= T.shape[-1]:
        vals, vecs = np.linalg.eigh(T @ np.swapaxes(T, 1, 2))
        return vals[:, -1], vecs[:, :, -1]
    Q, R = np.linalg.qr(T)
    vals, vecs = np.linalg.eigh(R @ np.swapaxes(R, 1, 2))
    return vals[:, -1], (Q @ vecs[:, :, -1:])[:, :, 0]


class Interval:
    """Per input: ``ritz`` (certified in exact arithmetic), ``low``/``high`` (the interval) and
    ``u`` (n × C), the Ritz vector of the whole sketch in output space."""

    def __init__(self, ritz, low, high, u):
        self.ritz, self.low, self.high, self.u = ritz, low, high, u


def interval(S, d: int, a_low: float, a_high: float, k1: int = 0, split: int = None) -> Interval:
    """The interval of the module docstring from S (n, C, k) float64 on the host.

    ``k1``: leading fixed (non-random) probes; ``split``: probes that choose û (default
    ``max(k1, k // 2)``). Without random probes the upper end is ∞ unless they span R^d."""
    S = np.asarray(S, dtype=np.float64)
    n, _, k = S.shape
    ritz, u = _top(S)
    if k >= d:
        return Interval(ritz, ritz.copy(), ritz.copy(), u)
    m2 = k - k1
    if m2 <= 0:
        return Interval(ritz, ritz.copy(), np.full(n, np.inf), u)
    beta = _beta(a_high, m2, d - k)
    T = np.concatenate([S[:, :, :k1], S[:, :, k1:] / math.sqrt(beta)], axis=2) if beta > 0 else None
    high = _top(T)[0] if T is not None else np.full(n, np.inf)
    s = max(int(k1), k // 2) if split is None else max(int(k1), int(split))
    low = ritz.copy()
    if 0 < s < k:
        _, uh = _top(S[:, :, :s])
        known = np.sum(np.einsum("nc,nck->nk", uh, S[:, :, :s]) ** 2, axis=1)
        fresh = np.sum(np.einsum("nc,nck->nk", uh, S[:, :, s:]) ** 2, axis=1)
        low = np.maximum(low, known + fresh / _beta(1.0 - a_low, k - s, d - k))
    return Interval(ritz, low, np.maximum(high, low), u)


def relative_halfwidth(low, high):
    """``(high − low)/(high + low)``: the interval is midpoint · (1 ± this)."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    tot = high + low
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.where(tot > 0, (high - low) / np.where(tot > 0, tot, 1.0), 0.0)
    return np.where(np.isfinite(high), h, 1.0)
