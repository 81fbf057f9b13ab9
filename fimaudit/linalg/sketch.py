r"""The Gram sketch of B = A Aᵀ from k right products A q (A = R J, C × d).

With orthonormal probe rows Q (k × d) and S = A Qᵀ (C × k):

* ``λ_max(S Sᵀ) = λ_max(A QᵀQ Aᵀ) ≤ λ_max(A Aᵀ)`` since QᵀQ ⪯ I — a certified lower
  bound for any orthonormal Q (up to errors in the products);
* for Haar-random Q, ``E[(d/k) QᵀQ] = I``, so ``(d/k) S Sᵀ`` is unbiased for B and its
  top eigenvalue is the estimate (exact when k = d);
* the point value is that top eigenvalue corrected by a delete-a-group jackknife over g
  disjoint groups of probes (delete-one by default): ``g λ̂ − (g − 1) mean λ̂₍₋ᵢ₎``, with
  ``stderr`` ``((g−1)/g Σ (λ̂₍₋ᵢ₎ − mean)²)^½`` — an estimate (Jensen biases the top
  eigenvalue of an unbiased matrix upward where the top of the spectrum is flat), clipped to
  the interval;
* the interval ``[low, high]`` is that of :mod:`fimaudit.linalg.sketch_bounds` (one look,
  (1 − level)/2 on each end), valid for every spectrum; ``ritz`` = λ_max(S Sᵀ) is its
  certified part (exact arithmetic) and ``low ≥ ritz``.
References: Efron & Stein, Ann. Statist. 9 (1981) (the jackknife); Martinsson & Tropp,
"Randomized numerical linear algebra", Acta Numerica 29 (2020) §4.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._array import device, to_numpy
from .dense import top_eigh
from .sketch_bounds import interval


@dataclass
class SketchEstimate:
    value: object  # (n,) estimate of λ_max(B) (jackknife-corrected), clipped to [low, high]
    ritz: object  # (n,) λ_max(S Sᵀ): a lower bound, certified in exact arithmetic
    low: object  # (n,) the interval at ``level``, valid for every spectrum (low ≥ ritz)
    high: object
    stderr: object
    vectors: object  # (n, C) top eigenvector of the scaled sketch


def _top(xp, S, scale):
    """Top eigenpair of scale · S Sᵀ; for C > k from the thin QR S = Q R, as Q (R Rᵀ) Qᵀ,
    so that no C × C matrix is formed."""
    if S.shape[-2] <= S.shape[-1]:
        vals, vecs = top_eigh(xp, scale * xp.matmul(S, xp.permute_dims(S, (0, 2, 1))), 1)
        return vals[:, 0], vecs[:, :, 0]
    Q, R = xp.linalg.qr(S)
    vals, vecs = top_eigh(xp, scale * xp.matmul(R, xp.permute_dims(R, (0, 2, 1))), 1)
    return vals[:, 0], xp.matmul(Q, vecs)[:, :, 0]


def gram_sketch(xp, S, d: int, random: bool, groups=None, level: float = 0.95) -> SketchEstimate:
    """Estimate λ_max(A Aᵀ) from S = A Qᵀ (n, C, k) and the input dimension d.

    ``groups``: jackknife groups (default k: delete-one)."""
    k = int(S.shape[-1])
    a = (1.0 - float(level)) / 2
    if not random or k >= d:  # a fixed subspace: the Ritz value only (exact when it spans R^d)
        lower, vec = _top(xp, S, 1.0)
        high = lower if k >= d else xp.full_like(lower, float("inf"))
        return SketchEstimate(lower, lower, lower, high, xp.zeros_like(lower), vec)
    est, vec = _top(xp, S, d / k)
    g = k if groups is None else max(2, min(int(groups), k))
    bounds = [round(i * k / g) for i in range(g + 1)]
    loo = []
    for i in range(g):
        keep = [j for j in range(k) if not bounds[i] <= j < bounds[i + 1]]
        Si = xp.stack([S[:, :, j] for j in keep], axis=-1)
        loo.append(_top(xp, Si, d / len(keep))[0])
    L = xp.stack(loo, axis=1)  # (n, g)
    mean = xp.mean(L, axis=1)
    value = g * est - (g - 1) * mean
    stderr = xp.sqrt((g - 1) / g * xp.sum((L - mean[:, None]) ** 2, axis=1))
    iv = interval(to_numpy(S), d, a, a)
    ritz, low, high = (xp.asarray(v, dtype=est.dtype, device=device(est)) for v in (iv.ritz, iv.low, iv.high))
    value = xp.minimum(xp.maximum(value, low), high)
    return SketchEstimate(value, ritz, low, high, stderr, vec)
