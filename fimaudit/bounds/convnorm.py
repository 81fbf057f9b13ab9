r"""Certified ℓ2 norms of convolutions, from their symbols on the DFT grid, by Gram iteration.

A zero-padded convolution with kernel W (c_out, c_in/g, *k), dilation d, on inputs of size n
equals an isometric zero-embedding into the grid N = n + k_eff − 1 (k_eff = (k − 1)d + 1),
a circular convolution there (no wrap-around: that is the full linear convolution) and a
coordinate restriction, plus subsampling for strides and zeros for pads beyond k_eff − 1. Its
norm is therefore at most that of the circular convolution, max_ω σ₁(K̂(ω)) over the grid,
``K̂(ω) = Σ_p W[:, :, p] exp(−2πi Σ_a ω_a p_a / N_a)`` per group (Sedghi, Gupta & Long, ICLR
2019, Thm. 6). Since W is real, K̂(−ω) is the conjugate of K̂(ω), with the same singular
values, so half the grid (the last axis up to N/2) suffices; along an axis where k_eff = 1 the
symbol is constant and one frequency suffices (a 1×1 convolution is one matrix).

Per frequency, with d the smaller side of K̂ and G₁ = K̂*K̂ (or K̂K̂*), G_{t+1} = G_t²:
``σ₁(K̂)^{2^t} = λ_max(G_t) ≤ ‖G_t‖_F``, so ``σ₁ ≤ ‖G_t‖_F^{1/2^t}`` for every t — a proven
upper bound that over-estimates by at most d^{1/2^{t+1}} (Gram iteration: Delattre, Barthélemy,
Araujo & Allauzen, ICML 2023, "Efficient Bound of Lipschitz Constant for Convolutional Layers
by Gram Iteration"). Each G_t is divided by its Frobenius norm and the logarithm of the scale
carried (log c_{t+1} = 2 log c_t + log ‖G_t²‖_F), so nothing overflows or underflows. Lower
bounds come with it: for PSD M, λ_max(M) ≥ (M²)_jj / M_jj (the Rayleigh quotient at M^{1/2}e_j),
read off the column norms already computed. A frequency
whose upper bound falls below the best lower bound found anywhere cannot hold the maximum and
is dropped; iteration stops once the largest upper bound left is within 1 + RTOL of the best
lower bound, or after T_MAX squarings, so the result lies in
``[max_ω σ₁, max(1 + RTOL, d^{1/2^{T_MAX+1}}) · max_ω σ₁]`` (up to float64 rounding, which is
relative and of order d·10⁻¹⁶ per step, then shrunk by the 2^t-th root).

The symbol's Gram matrix is summed from the kernel's autocorrelation, G₁(ω) = K̂(ω)*K̂(ω) =
Σ_r C_r e^{2πi⟨ω, r/N⟩} with C_r = Σ_{p − q = r} W_pᵀ W_q (one product per tap pair, then one
matrix product per chunk of frequencies of at most CHUNK_BYTES, so memory stays bounded),
never from K̂ itself.

Dispatch by cost, B·d³ for B matrices of side d: at most EXACT_FLOPS (small layers, or the few
frequencies left after pruning) gets the exact λ_max(G₁) from LAPACK, which is tighter; above
it Gram iteration, whose squarings are matrix products (BLAS 3) and whose pruning usually
leaves few frequencies after a step or two.
"""

from __future__ import annotations

import math

import numpy as np

RTOL = 0.01  # stop once the bound is within 1 % of a certified lower bound
T_MAX = 10  # squarings at most: over-estimate ≤ d^(1/2048) even where RTOL is not reached
EXACT_FLOPS = 1e7
CHUNK_BYTES = 64 << 20  # working memory per chunk of frequencies


def layout(W, spatial, dilations=None):
    """(tap offsets (P, ndim), grid N per axis) of a kernel on inputs of size ``spatial``."""
    k = W.shape[2:]
    dil = list(dilations) if dilations else [1] * len(k)
    keff = [(kk - 1) * d + 1 for kk, d in zip(k, dil)]
    grid = [int(n) + ke - 1 if ke > 1 else 1 for n, ke in zip(spatial, keff)]
    taps = np.stack(np.meshgrid(*[np.arange(kk) * d for kk, d in zip(k, dil)], indexing="ij"), -1)
    return taps.reshape(-1, len(k)), grid


def half_grid(grid):
    """Frequencies (F, ndim) covering the grid up to conjugation: the last axis up to N/2."""
    if not grid:
        return np.zeros((1, 0), dtype=np.int64)
    axes = [np.arange(n) for n in grid[:-1]] + [np.arange(grid[-1] // 2 + 1)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(grid))


def sizes(W_shape, group):
    """(d, lags R, taps P) of a kernel: the Gram side, the autocorrelation's lags, the taps."""
    k = tuple(W_shape[2:])
    return min(W_shape[0] // group, W_shape[1]), math.prod(2 * kk - 1 for kk in k), math.prod(k)


def per_frequency_bytes(d, group, lags):
    """Working bytes for one frequency: its phase per lag (cos, sin, angle), G (complex) with
    its two real products and two squaring temporaries."""
    return 24 * lags + group * 80 * d * d


def workspace(W_shape, spatial, dilations=None, group=1):
    """(half-grid shape, bytes) the norm of a kernel of shape ``W_shape`` needs: the table of
    frequencies, the autocorrelation, one chunk's working set and a float64 copy of the kernel."""
    k = tuple(W_shape[2:])
    dil = list(dilations) if dilations else [1] * len(k)
    grid = [int(n) + (kk - 1) * dd if kk > 1 else 1 for n, kk, dd in zip(spatial, k, dil)]
    half = tuple(grid[:-1]) + ((grid[-1] // 2 + 1,) if grid else ())
    F = math.prod(half)
    d, R, P = sizes(W_shape, group)
    per = per_frequency_bytes(d, group, R)
    chunk = min(F, max(1, CHUNK_BYTES // per))
    return half, 8 * len(k) * F + chunk * per + 8 * group * R * d * d + 16 * P * d * d + 16 * math.prod(W_shape)


def conv_norm(W, spatial, dilations=None, group=1):
    """Certified upper bound on the ℓ2 norm of a zero-padded convolution (any stride and
    padding) with kernel W (c_out, c_in/group, *k) on inputs of size ``spatial``."""
    W = np.asarray(W, dtype=np.float64)
    taps, grid = layout(W, spatial, dilations)
    freqs = half_grid(grid)
    lags, C = autocorrelation(W, taps, group)  # G(ω) = Σ_r C_r e^{2πi⟨ω, r/N⟩}
    d = C.shape[-1]
    Cflat = C.transpose(1, 0, 2, 3).reshape(len(lags), -1)  # (lags, groups · d · d)
    chunk = max(1, CHUNK_BYTES // per_frequency_bytes(d, group, len(lags)))
    scale = 2 * np.pi * lags / np.maximum(np.asarray(grid, dtype=np.float64), 1)  # (lags, ndim)
    lower, upper = 0.0, 0.0
    for start in range(0, len(freqs), chunk):
        theta = freqs[start : start + chunk].astype(np.float64) @ scale.T  # (F, lags)
        G = (np.cos(theta) @ Cflat + 1j * (np.sin(theta) @ Cflat)).reshape(-1, d, d)  # (F · groups, d, d)
        up, low = hermitian_max_eig(G, lower**2)
        lower, upper = max(lower, math.sqrt(low)), max(upper, math.sqrt(up))
    return upper


def autocorrelation(W, taps, group):
    """(lags (R, ndim), C (groups, R, d, d)) with C_r = Σ_{p − q = r} W_pᵀ W_q per group, the
    kernel's autocorrelation: K̂(ω)*K̂(ω) = Σ_r C_r e^{2πi⟨ω, r/N⟩}, d the smaller side of W_p
    (K̂K̂* when the output side is the smaller, with the same nonzero eigenvalues)."""
    g = group
    Wg = W.reshape(g, W.shape[0] // g, W.shape[1], -1)  # (g, o, i, P)
    if Wg.shape[2] > Wg.shape[1]:
        Wg = np.swapaxes(Wg, 1, 2)  # K̂ᵀ: taps W_pᵀ, same singular values
    P, d = Wg.shape[3], Wg.shape[2]
    diff = taps[:, None, :] - taps[None, :, :]  # (P, P, ndim)
    lags, index = np.unique(diff.reshape(-1, taps.shape[1]), axis=0, return_inverse=True)
    index = index.reshape(P, P)
    C = np.zeros((g, len(lags), d, d))
    for k in range(g):
        rows = np.ascontiguousarray(np.moveaxis(Wg[k], 2, 1)).reshape(-1, P * d)  # (o, P·d)
        for p in range(P):  # W_pᵀ W_q for every q; the lags p − q are distinct over q
            X = (rows[:, p * d : (p + 1) * d].T @ rows).reshape(d, P, d)
            C[k, index[p]] += np.swapaxes(X, 0, 1)
    return lags, C


def _exact(G):
    lam = np.linalg.eigvalsh(G)[:, -1] if len(G) else np.zeros(0)
    top = float(max(np.max(lam, initial=0.0), 0.0))
    return top, top


def hermitian_max_eig(G, floor=0.0):
    """(upper, lower) bounds on max_b λ_max(G_b) over a batch of Hermitian PSD matrices,
    where maxima below ``floor`` (a certified lower bound found elsewhere) are not needed:
    the upper bound is then only guaranteed to be ≥ the maximum or ≤ ``floor``."""
    B, d = G.shape[0], G.shape[-1]
    if B * d**3 <= EXACT_FLOPS:
        return _exact(G)
    cols = _column_norms2(G)
    s = np.sqrt(cols.sum(axis=1))
    idx = np.flatnonzero(s > 0)  # the matrices still in play, by position in G
    if not len(idx):
        return 0.0, 0.0
    M, logc, cols = G[idx] / s[idx, None, None], np.log(s[idx]), cols[idx] / s[idx, None] ** 2
    floor_log = math.log(floor) if floor > 0 else -math.inf
    for t in range(T_MAX + 1):
        e = 2.0**t  # λ_max(G_t) = λ_max(G₁)^e, G_t = c_t M with ‖M‖_F = 1
        up_log = logc / e
        low_log = (logc + np.log(np.maximum(_rayleigh(M, cols), 1e-300))) / e
        best = max(floor_log, float(np.max(low_log)))
        alive = up_log >= best - 1e-12
        M, logc, up_log, idx = M[alive], logc[alive], up_log[alive], idx[alive]
        if len(M) * d**3 <= EXACT_FLOPS:  # few left: their exact eigenvalues
            up, low = _exact(G[idx])
            return max(up, math.exp(best)), max(low, math.exp(best))
        if float(np.max(up_log)) <= best + math.log1p(RTOL) or t == T_MAX:
            return math.exp(float(np.max(up_log))), math.exp(best)
        M = np.matmul(M, M)
        cols = _column_norms2(M)
        s2 = cols.sum(axis=1)
        M, cols, logc = M / np.sqrt(s2)[:, None, None], cols / s2[:, None], 2 * logc + 0.5 * np.log(s2)
    raise AssertionError("unreachable")  # pragma: no cover


def _column_norms2(M):
    return np.sum(M.real**2 + M.imag**2, axis=1) if np.iscomplexobj(M) else np.sum(M**2, axis=1)


def _rayleigh(M, cols):
    """max_j (M²)_jj / M_jj ≤ λ_max(M) for Hermitian PSD M: the Rayleigh quotient of M at
    M^{1/2} e_j, from the squared column norms ‖M e_j‖² = (M²)_jj and the diagonal."""
    diag = np.real(np.diagonal(M, axis1=1, axis2=2))
    ok = diag > 0
    return np.max(np.where(ok, cols / np.where(ok, diag, 1.0), 0.0), axis=1)
