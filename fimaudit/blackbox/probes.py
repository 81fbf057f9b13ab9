r"""Probe subspaces for black-box sketches: rows of an orthonormal Q (k × d) per input.

* ``random``: Haar-distributed orthonormal rows (QR of a Gaussian matrix, signs fixed),
  independent per input. Then ``E[(d/k) QᵀQ] = I``, which makes the scaled Gram sketch
  unbiased for J Jᵀ.
* ``dct``: the k lowest-frequency 2-D DCT-II basis images (orthonormal), ordered by
  u + v, for inputs shaped (..., H, W); channels are separate basis vectors. Not random:
  it gives a certified lower bound, no unbiased estimate.
* a user-given basis (array k × d or k × *input_shape), orthonormalised by QR.
* ``extend``: m more Haar rows orthogonal to rows already drawn (sampling without
  replacement; block Gram–Schmidt twice with CholeskyQR, Barlow & Smoktunowicz, Numer. Math.
  123 (2013)): conditional on the first rows, the new ones are Haar in their orthogonal
  complement, which is what the interval of :mod:`fimaudit.linalg.sketch_bounds` needs, and
  at k = d the rows span R^d, so the sketch is exact.
Reference for the random sketch: Halko, Martinsson & Tropp, SIAM Review 53 (2011) §4.
"""

from __future__ import annotations

import math

import numpy as np

from .._array import device, normal, to_numpy
from ..errors import InvalidArgumentError

__all__ = ["random_orthonormal", "extend", "orthonormalise", "dct_basis", "user_basis"]


def random_orthonormal(xp, like, n, k, d, seed):
    """(n, k, d) with orthonormal rows per input."""
    return xp.permute_dims(orthonormalise(xp, normal(xp, like, (n, d, k), seed)), (0, 2, 1))


def extend(xp, Q, m, seed):
    """(n, m, d): m Haar rows orthogonal to the rows of Q (n, k, d), k + m ≤ d, in Q's library
    and dtype: block Gram–Schmidt twice, each projection followed by a CholeskyQR (BCGS2)."""
    n, d = int(Q.shape[0]), int(Q.shape[2])
    G = normal(xp, Q, (n, d, m), seed)
    Qt = xp.permute_dims(Q, (0, 2, 1))
    for _ in range(2):
        G = orthonormalise(xp, G - xp.matmul(Qt, xp.matmul(Q, G)), passes=1)
    return xp.permute_dims(G, (0, 2, 1))


def _cholqr(xp, G):
    """G R⁻¹ for R = chol(GᵀG) upper (n, d, m), or None where the Cholesky factor fails or is not finite."""
    try:
        L = xp.linalg.cholesky(xp.matmul(xp.permute_dims(G, (0, 2, 1)), G))
    except Exception:  # numpy's and torch's LinAlgError: GᵀG not positive definite in floating point
        return None
    P = xp.permute_dims(xp.linalg.solve(L, xp.permute_dims(G, (0, 2, 1))), (0, 2, 1))  # (L⁻¹Gᵀ)ᵀ = G L⁻ᵀ
    return P if bool(xp.all(xp.isfinite(P))) else None


def orthonormalise(xp, G, passes=2):
    """The Q factor (n, d, m) of G with a positive-diagonal R, by CholeskyQR ``passes`` times
    (CholeskyQR2: Fukaya, Nakatsukasa, Yanagisawa & Yamamoto, ScalA 2014, orthogonal to
    rounding for cond(G) up to about u^(-1/2)); a Householder QR, signs fixed, where a Cholesky
    factor fails. The Q factor with positive diagonal R is unique, so both give the same Haar
    rows of a Gaussian G, up to rounding."""
    P = G
    for _ in range(passes):
        P = _cholqr(xp, P)
        if P is None:
            P, R = xp.linalg.qr(G)
            signs = xp.sign(xp.linalg.diagonal(R))
            return P * xp.where(signs == 0, xp.ones_like(signs), signs)[:, None, :]
    return P


def _dct_1d(N, freqs):
    t = np.arange(N)
    B = np.cos(np.pi * (2 * t[None, :] + 1) * np.asarray(freqs)[:, None] / (2 * N))
    B[np.asarray(freqs) == 0] *= 1 / math.sqrt(2)
    return B * math.sqrt(2 / N)


def dct_basis(input_shape, k):
    """(k, d) numpy array: the k lowest-frequency orthonormal DCT-II basis vectors."""
    shape = tuple(input_shape)
    d = math.prod(shape)
    if k > d:
        raise InvalidArgumentError(f"k={k} DCT probes exceed the input size d={d}")
    if len(shape) == 1:
        return _dct_1d(shape[0], range(k))
    H, W = shape[-2], shape[-1]
    channels = math.prod(shape[:-2]) if len(shape) > 2 else 1
    order = sorted((u + v, u, v, c) for u in range(H) for v in range(W) for c in range(channels))[:k]
    BH, BW = _dct_1d(H, range(H)), _dct_1d(W, range(W))
    out = np.zeros((k, channels, H, W))
    for i, (_, u, v, c) in enumerate(order):
        out[i, c] = np.outer(BH[u], BW[v])
    return out.reshape(k, d)


def user_basis(basis, d):
    """(k, d) numpy array with orthonormal rows spanning the given rows."""
    B = np.asarray(to_numpy(basis), dtype=np.float64).reshape(-1, d) if np.size(to_numpy(basis)) % d == 0 else None
    if B is None or B.shape[0] == 0:
        raise InvalidArgumentError(
            f"probes must be an array of k basis vectors of size d={d}, shape (k, d) or (k, *input_shape)"
        )
    Q, R = np.linalg.qr(B.T)
    if np.min(np.abs(np.diag(R))) <= 1e-10 * np.max(np.abs(np.diag(R))):
        raise InvalidArgumentError("the given probe vectors are linearly dependent; pass a basis")
    return Q.T


def fixed(xp, like, basis, n):
    """A (k, d) numpy basis as (n, k, d) in like's library."""
    B = xp.asarray(basis, dtype=like.dtype, device=device(like))
    return xp.broadcast_to(B[None, ...], (n, *B.shape))
