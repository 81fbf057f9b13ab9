r"""Spectral norms over a matrix zonotope: upper bounds on

    sup ‖M_0 + Σ_k ε_k M_k + E‖₂  over |ε_k| ≤ 1 and |E| ≤ R (elementwise),

the set the backward pass of :mod:`.backward` leaves for the Jacobian (M_0 the signed rows,
M_k the generators, R the radius), tighter than ‖M_0‖₂ + ‖R + Σ_k |M_k|‖₂, which adds the
generators' magnitudes before taking the norm and so loses the cancellations between them.

Each generator is split as M_k = c_k w_kᵀ + Δ_k (c_k w_kᵀ its leading singular term, balanced
as √σ u and √σ v), Δ_k joining R by magnitude; on the ReLU and max-pool paths the backward pass
applies the same linear maps to every row, so its generators are rank one and Δ_k vanishes up
to rounding. With C = [c_k], W = [w_k] and any λ > 0,

    M_0 + C diag(ε) Wᵀ = [λI, C] · diag(I, ε) · [M_0ᵀ/λ, W]ᵀ,

and ‖diag(I, ε)‖₂ ≤ 1, so the norm is at most √(λ² + ‖C‖₂²) · ‖[M_0ᵀ/λ, W]‖₂ (the second
factor from the eigenvalues of its (rows + k)-square Gram matrix), minimised over a grid of λ
around √(‖C‖ ‖M_0‖ / ‖W‖) and then by golden-section steps; it is never above
‖M_0‖ + ‖C‖ ‖W‖, which is also tried.
Then ‖E‖₂ ≤ ‖R‖₂ (R ≥ |E| and the spectral norm is monotone on nonnegative matrices, Perron–
Frobenius). One row m + Σ_k δ_k ŵ_k (ŵ_k = c_ik w_k) has ‖·‖² ≤ ‖m‖² + 2 Σ_k |m·ŵ_k| +
Σ_{k,l} |ŵ_k·ŵ_l|, each term of the expanded square bounded by its magnitude.

The bound follows the zonotope view of Jacobian bounds in Shi et al., NeurIPS 2022
("Efficiently computing local Lipschitz constants of neural networks via bound propagation")
and the factorisation bound ‖ADB‖ ≤ ‖A‖ ‖D‖ ‖B‖ (Horn & Johnson, Matrix Analysis, 5.6).
"""

from __future__ import annotations

import numpy as np

SLACK = 1e-10  # relative margin for the rounding of the eigenvalue routines
GRID = np.geomspace(1e-2, 1e2, 13)
REFINE = 40


def factors(Mk, R):
    """(C (rows, k), W (n, k), R + Σ_k |Δ_k|): the leading singular term of each generator
    Mk[k] (rows, n), and the radius with what those terms leave out."""
    if Mk.shape[0] == 0:
        return np.zeros((Mk.shape[1], 0)), np.zeros((Mk.shape[2], 0)), R
    vals, vecs = np.linalg.eigh(Mk @ np.swapaxes(Mk, 1, 2))  # (k, rows), ascending
    u, s2 = vecs[:, :, -1], np.maximum(vals[:, -1], 0.0)
    s = np.sqrt(s2)
    v = np.einsum("kr,krn->kn", u, Mk) / np.where(s > 0, s, 1.0)[:, None]  # σ v = Mkᵀ u
    c, w = u * np.sqrt(s)[:, None], v * np.sqrt(s)[:, None]
    rest = np.abs(Mk - c[:, :, None] * w[:, None, :]).sum(0)
    return c.T, w.T, R + rest


def _lmax(S):
    return float(np.linalg.eigvalsh(S)[-1]) if S.size else 0.0


def norm_bound(M0, R, Mk):
    """An upper bound on sup ‖M_0 + Σ_k ε_k M_k + E‖₂ over |ε| ≤ 1, |E| ≤ R, never above the
    interval hull's ‖M_0‖ + ‖R + Σ_k |M_k|‖."""
    m0 = np.linalg.norm(M0, 2)
    hull = m0 + np.linalg.norm(R + np.abs(Mk).sum(0), 2)
    C, W, R = factors(Mk, R)
    rad = np.linalg.norm(R, 2)
    if C.shape[1] == 0 or not np.any(C):
        return min(hull, m0 + rad) * (1 + SLACK)
    cn, WW, MW, MM = np.linalg.norm(C, 2), W.T @ W, M0 @ W, M0 @ M0.T
    wn = np.sqrt(max(_lmax(WW), 0.0))
    best = m0 + cn * wn
    centre = np.sqrt(cn * m0 / wn) if m0 > 0 and wn > 0 else 1.0

    def at(log_lam):  # the bound at λ = e^log_lam: every λ > 0 gives one
        lam = np.exp(log_lam)
        gram = np.block([[MM / lam**2, MW / lam], [MW.T / lam, WW]])
        return np.sqrt((lam**2 + cn**2) * max(_lmax(gram), 0.0))

    logs = np.log(centre * GRID)
    vals = [at(v) for v in logs]
    k = int(np.argmin(vals))
    a, b = logs[max(k - 1, 0)], logs[min(k + 1, len(logs) - 1)]
    g = (np.sqrt(5.0) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    vc, vd = at(c), at(d)
    for _ in range(REFINE):  # golden-section steps between the grid's neighbours of the best
        if vc < vd:
            b, d, vd = d, c, vc
            c = b - g * (b - a)
            vc = at(c)
        else:
            a, c, vc = c, d, vd
            d = a + g * (b - a)
            vd = at(d)
        vals.append(min(vc, vd))
    return min(hull, min(best, min(vals)) + rad) * (1 + SLACK)


def row_bounds(M0, R, Mk):
    """Per row i, an upper bound on sup ‖M_0[i] + Σ_k ε_k M_k[i] + E[i]‖₂ (the same set),
    never above the interval hull's."""
    hull = np.linalg.norm(M0, axis=1) + np.linalg.norm(R + np.abs(Mk).sum(0), axis=1)
    C, W, R = factors(Mk, R)
    WW, MW = np.abs(W.T @ W), np.abs(M0 @ W)  # (k, k), (rows, k)
    quad = np.einsum("ik,kl,il->i", np.abs(C), WW, np.abs(C))
    cross = (np.abs(C) * MW).sum(1)
    sq = np.sum(M0 * M0, 1) + 2 * cross + quad
    return np.minimum(hull, np.sqrt(sq) + np.linalg.norm(R, axis=1)) * (1 + SLACK)
