r"""The Gram sketch of B = A Aᵀ from k right products A q (A = R J, C × d).

With orthonormal probe rows Q (k × d) and S = A Qᵀ (C × k):

* ``λ_max(S Sᵀ) = λ_max(A QᵀQ Aᵀ) ≤ λ_max(A Aᵀ)`` since QᵀQ ⪯ I — a certified lower
  bound for any orthonormal Q (up to errors in the products);
* for Haar-random Q, ``E[(d/k) QᵀQ] = I``, so ``(d/k) S Sᵀ`` is unbiased for B and its
  top eigenvalue is the estimate (exact when k = d);
* the interval comes from a delete-a-group jackknife over g disjoint groups of probes
  (delete-one by default): bias-corrected estimate
  ``g λ̂ − (g − 1) mean λ̂₍₋ᵢ₎`` and variance ``(g−1)/g Σ (λ̂₍₋ᵢ₎ − mean)²``; the
  interval ``λ̂ · exp(± t · se/λ̂)`` is formed on the log scale (the estimate is skewed:
  a sketch that misses the top direction is low *and* tightly spread), with a Student-t
  quantile on g − 1 degrees of freedom, and clipped below at the certified lower bound.
References: Efron & Stein, Ann. Statist. 9 (1981) (the jackknife); Martinsson & Tropp,
"Randomized numerical linear algebra", Acta Numerica 29 (2020) §4.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dense import top_eigh


@dataclass
class SketchEstimate:
    value: object  # (n,) estimate of λ_max(B)
    lower: object  # (n,) certified lower bound
    low: object  # (n,) interval
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
    if not random or k >= d:  # a fixed subspace: the lower bound only (exact when it spans R^d)
        lower, vec = _top(xp, S, 1.0)
        high = lower if k >= d else xp.full_like(lower, float("inf"))
        return SketchEstimate(lower, lower, lower, high, xp.zeros_like(lower), vec)
    est, vec = _top(xp, S, d / k)
    lower = est * (k / d)  # λ_max(S Sᵀ): the certified lower bound
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
    from scipy import stats  # imported on use: scipy.stats costs seconds at start-up

    t = float(stats.t.ppf(0.5 + level / 2, g - 1))
    value = xp.maximum(value, lower)
    # on the log scale: the sketch's λ_max is skewed (a sketch that misses the top
    # direction is low with a small spread), and λ > 0
    pos = value > 0
    rel = xp.where(pos, stderr / xp.where(pos, value, xp.ones_like(value)), xp.zeros_like(value))
    low = xp.maximum(value * xp.exp(-t * rel), lower)
    high = xp.where(pos, value * xp.exp(t * rel), value + t * stderr)
    return SketchEstimate(value, lower, low, high, stderr, vec)
