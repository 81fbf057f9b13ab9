r"""Batched Lanczos with full reorthogonalisation, run in lockstep over many operators.

For a symmetric PSD operator B (here ``B = R J Jᵀ Rᵀ``, C×C per input) and a start
vector q₁, j steps build an orthonormal Krylov basis ``Q_j = [q₁ … q_j]`` and the
tridiagonal ``T_j = Q_jᵀ B Q_j``. For a Ritz pair (θ, y) of T_j the Ritz vector
``u = Q_j y`` satisfies ``‖B u − θ u‖ = β_j |y_j|`` (the residual), so

* θ ≤ λ_max(B) (θ is a Rayleigh quotient): a certified lower bound;
* some eigenvalue of B lies in ``[θ − r, θ + r]`` (Weyl/Bauer–Fike for symmetric
  matrices), so ``θ + r`` bounds λ_max from above once the Krylov space has found it.

Full reorthogonalisation (two passes of classical Gram–Schmidt, "twice is enough")
keeps Q orthonormal to working precision, so no ghost eigenvalues appear.
All inputs step together: one batched product per step; each input stops being
updated once its own residual meets ``tol · θ``.

References: Lanczos, J. Res. Nat. Bur. Standards 45 (1950); Parlett, *The Symmetric
Eigenvalue Problem* (1998), ch. 13; Golub & Van Loan, *Matrix Computations*, §10.1.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._array import device, promote


@dataclass
class LanczosResult:
    values: object  # (n, k) Ritz values, descending
    vectors: object  # (n, k, C) unit Ritz vectors
    residuals: object  # (n, k) ‖B u − θ u‖
    steps: object  # (n,) products used until convergence (or the cap)
    converged: object  # (n,) bool


def _ritz(xp, T, beta, k, dtype):
    evals, evecs = xp.linalg.eigh(T)
    j = T.shape[-1]
    idx = list(range(j - 1, j - 1 - k, -1))
    theta = xp.stack([evals[:, i] for i in idx], axis=1)
    Y = xp.stack([evecs[:, :, i] for i in idx], axis=2)  # (n, j, k)
    res = xp.abs(beta[:, None] * Y[:, -1, :])
    return xp.astype(theta, dtype), xp.astype(Y, dtype), xp.astype(res, dtype)


def lanczos(xp, matvec, q0, *, k: int = 1, max_steps: int = 40, tol: float = 1e-4) -> LanczosResult:
    """Top-k eigenpairs of n symmetric PSD operators at once.

    ``matvec`` maps an (n, C) array to (n, C); ``q0`` (n, C) holds the start vectors
    (random, so that no eigenvector is missed with probability one).
    """
    n, C = q0.shape
    dtype = q0.dtype
    m = max(min(int(max_steps), C), k)
    eps = 10.0 * float(xp.finfo(dtype).eps)
    dev = device(q0)

    q = q0 / xp.linalg.vector_norm(q0, axis=-1, keepdims=True)
    basis = []
    T = xp.zeros((n, m, m), dtype=promote(xp, q0).dtype, device=dev)
    q_prev = xp.zeros_like(q)
    beta_prev = xp.zeros((n,), dtype=dtype, device=dev)

    values = xp.zeros((n, k), dtype=dtype, device=dev)
    vectors = xp.zeros((n, k, C), dtype=dtype, device=dev)
    residuals = xp.full((n, k), float("inf"), dtype=dtype, device=dev)
    steps = xp.zeros((n,), dtype=xp.int64, device=dev)
    done = xp.zeros((n,), dtype=xp.bool, device=dev)
    converged = xp.zeros((n,), dtype=xp.bool, device=dev)

    for j in range(m):
        basis.append(q)
        w = matvec(q)
        alpha = xp.sum(q * w, axis=-1)
        w = w - alpha[:, None] * q - beta_prev[:, None] * q_prev
        Qs = xp.stack(basis, axis=1)  # (n, j+1, C)
        for _ in range(2):  # full reorthogonalisation, twice
            coeff = xp.matmul(Qs, w[:, :, None])  # (n, j+1, 1)
            w = w - xp.matmul(xp.permute_dims(Qs, (0, 2, 1)), coeff)[:, :, 0]
        beta = xp.linalg.vector_norm(w, axis=-1)

        T[:, j, j] = xp.astype(alpha, T.dtype)
        if j + 1 < m:
            T[:, j, j + 1] = xp.astype(beta, T.dtype)
            T[:, j + 1, j] = xp.astype(beta, T.dtype)

        kk = min(k, j + 1)
        theta, Y, res = _ritz(xp, T[:, : j + 1, : j + 1], promote(xp, beta), kk, dtype)
        top = theta[:, :1]
        floor = xp.where(top > 0, top, xp.ones_like(top)) * eps
        ok = xp.all(res <= tol * xp.maximum(theta, floor), axis=-1)
        breakdown = beta <= eps * xp.where(top[:, 0] > 0, top[:, 0], xp.ones_like(top[:, 0]))
        # Krylov space exhausted (C steps, or an invariant subspace): Ritz pairs are exact.
        exhausted = breakdown | (j + 1 == C)
        if kk == k:
            newly = (~done) & (ok | exhausted | (j + 1 == m))
            if bool(xp.any(newly)):  # freeze the inputs that finish at this step
                U = xp.matmul(xp.permute_dims(Y, (0, 2, 1)), Qs)  # Ritz vectors (n, k, C)
                values = xp.where(newly[:, None], theta, values)
                residuals = xp.where(newly[:, None], res, residuals)
                vectors = xp.where(newly[:, None, None], U, vectors)
                steps = xp.where(newly, xp.full_like(steps, j + 1), steps)
                converged = converged | (newly & (ok | exhausted))
                done = done | newly
                if bool(xp.all(done)):
                    break
        safe = xp.where(breakdown, xp.ones_like(beta), beta)
        q_prev, q = q, xp.where(breakdown[:, None], xp.zeros_like(w), w / safe[:, None])
        beta_prev = xp.where(breakdown, xp.zeros_like(beta), beta)

    return LanczosResult(values, vectors, residuals, steps, converged)
