"""Top eigenpairs of a batch of small dense symmetric matrices.

The C×C eigenproblem of ``B = R J Jᵀ Rᵀ`` is solved in float64 (when the backend has
it) with the batched symmetric solver ``linalg.eigh`` (LAPACK ``syevd`` on the CPU),
whose eigenvalues carry an absolute error of order ``eps · ‖B‖`` (Golub & Van Loan,
*Matrix Computations*, 4th ed., §8.1).
"""

from __future__ import annotations

from .._array import promote


def top_eigh(xp, B, k: int):
    """The k largest eigenvalues (n, k), descending, and eigenvectors (n, C, k) of B (n, C, C)."""
    B64 = promote(xp, B)
    B64 = 0.5 * (B64 + xp.permute_dims(B64, (0, 2, 1)))
    evals, evecs = xp.linalg.eigh(B64)
    C = B.shape[-1]
    idx = list(range(C - 1, C - 1 - k, -1))
    vals = xp.stack([evals[:, i] for i in idx], axis=1)
    vecs = xp.stack([evecs[:, :, i] for i in idx], axis=2)
    vals = xp.where(vals > 0, vals, xp.zeros_like(vals))  # PSD: clip round-off negatives
    return xp.astype(vals, B.dtype), xp.astype(vecs, B.dtype)
