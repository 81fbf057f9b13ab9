r"""Batched power iteration (kept for comparison with Lanczos).

``q ← B q / ‖B q‖``; after each step θ = qᵀ B q (a Rayleigh quotient, so θ ≤ λ_max)
and the residual ``r = ‖B q − θ q‖`` bounds the distance from θ to some eigenvalue.
The error shrinks like ``(λ₂/λ₁)^{2j}``, far slower than Lanczos on clustered spectra.
Reference: Golub & Van Loan, *Matrix Computations*, 4th ed., §7.3.1.
"""

from __future__ import annotations

from .._array import device
from .lanczos import LanczosResult


def power_iteration(xp, matvec, q0, *, max_steps: int = 500, tol: float = 1e-4) -> LanczosResult:
    """Largest eigenpair of n symmetric PSD operators, as a one-column LanczosResult."""
    n, C = q0.shape
    dev = device(q0)
    q = q0 / xp.linalg.vector_norm(q0, axis=-1, keepdims=True)
    values = xp.zeros((n, 1), dtype=q0.dtype, device=dev)
    vectors = xp.zeros((n, 1, C), dtype=q0.dtype, device=dev)
    residuals = xp.full((n, 1), float("inf"), dtype=q0.dtype, device=dev)
    steps = xp.zeros((n,), dtype=xp.int64, device=dev)
    done = xp.zeros((n,), dtype=xp.bool, device=dev)
    converged = xp.zeros((n,), dtype=xp.bool, device=dev)
    for j in range(int(max_steps)):
        w = matvec(q)
        theta = xp.sum(q * w, axis=-1)
        res = xp.linalg.vector_norm(w - theta[:, None] * q, axis=-1)
        ok = res <= tol * theta
        zero = theta <= 0  # B q = 0: q is in the null space; B may be 0 (saturated output)
        newly = (~done) & (ok | zero | (j + 1 == max_steps))
        values = xp.where(newly[:, None], theta[:, None], values)
        residuals = xp.where(newly[:, None], res[:, None], residuals)
        vectors = xp.where(newly[:, None, None], q[:, None, :], vectors)
        steps = xp.where(newly, xp.full_like(steps, j + 1), steps)
        converged = converged | (newly & (ok | zero))
        done = done | newly
        if bool(xp.all(done)):
            break
        norm = xp.linalg.vector_norm(w, axis=-1, keepdims=True)
        q = xp.where(norm > 0, w / xp.where(norm > 0, norm, xp.ones_like(norm)), q)
    return LanczosResult(values, vectors, residuals, steps, converged)
