r"""Hutch++: trace estimation with a low-rank part computed exactly.

With a budget of k products split in thirds: draw S, G (dim × k/3), take
``Q = orth(A S)``, and estimate

    tr A ≈ tr(Qᵀ A Q) + (3/k) tr(Gᵀ (I − QQᵀ) A (I − QQᵀ) G).

The first term is exact given Q; only the deflated remainder is sampled, so for PSD A
the error is O(tr A / k) instead of Hutchinson's O(tr A / √k). The standard error
reported is that of the sampled remainder (sample std / √m).
Reference: Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal Stochastic Trace
Estimation", SOSA 2021 (arXiv:2010.09649), Algorithm 1.
"""

from __future__ import annotations

import math

from .._array import rademacher
from .hutchinson import TraceEstimate


def hutchpp(xp, matmat, like, dim: int, k: int, seed: int) -> TraceEstimate:
    """Estimate tr A for n symmetric PSD operators given ``matmat(V)``: (n, m, dim) → (n, m, dim)."""
    n = like.shape[0]
    s = max(1, min(k // 3, dim))
    m = max(1, k - 2 * s)
    S = rademacher(xp, like, (n, s, dim), seed)
    G = rademacher(xp, like, (n, m, dim), seed + 1)
    Y = matmat(S)  # (n, s, dim)
    Q, _ = xp.linalg.qr(xp.permute_dims(Y, (0, 2, 1)))  # (n, dim, s)
    Qt = xp.permute_dims(Q, (0, 2, 1))  # (n, s, dim)
    low = xp.sum(Qt * matmat(Qt), axis=(-2, -1))  # tr(Qᵀ A Q)
    Gd = G - xp.matmul(xp.matmul(G, Q), Qt)  # rows of (I − QQᵀ) G
    q = xp.sum(Gd * matmat(Gd), axis=-1)  # (n, m)
    value = low + xp.mean(q, axis=-1)
    if m > 1:
        stderr = xp.std(q, axis=-1, correction=1) / math.sqrt(m)
    else:
        stderr = xp.full_like(value, float("inf"))
    return TraceEstimate(value, stderr, 2 * s + m)
