r"""Certified ℓ2 norms of convolutions, from their symbols on the DFT grid, certified by Cholesky.

A zero-padded convolution with kernel W (c_out, c_in/g, *k), dilation d, on inputs of size n
equals an isometric zero-embedding into the grid N = n + k_eff − 1 (k_eff = (k − 1)d + 1),
a circular convolution there (no wrap-around: that is the full linear convolution) and a
coordinate restriction, plus subsampling for strides and zeros for pads beyond k_eff − 1. Its
norm is therefore at most that of the circular convolution, max_ω σ₁(K̂(ω)) over the grid,
``K̂(ω) = Σ_p W[:, :, p] exp(−2πi Σ_a ω_a p_a / N_a)`` per group (Sedghi, Gupta & Long, ICLR
2019, Thm. 6). Since W is real, K̂(−ω) is the conjugate of K̂(ω), with the same singular
values, so half the grid (the last axis up to N/2) suffices; along an axis where k_eff = 1 the
symbol is constant and one frequency suffices (a 1×1 convolution is one matrix).

Per frequency, with d the smaller side of K̂ and G = K̂*K̂ (or K̂K̂*), σ₁(K̂)² = λ_max(G), and
for a batch of such Hermitian PSD matrices (:func:`hermitian_max_eig`):

* an upper bound per matrix, s = ‖G‖_F ≥ λ_max(G) (the first step of Gram iteration: Delattre,
  Barthélemy, Araujo & Allauzen, ICML 2023); each G is divided by it, so nothing over- or
  underflows;
* a lower bound per matrix, the Rayleigh quotient at the top Ritz vector of a Lanczos basis
  (:func:`ritz_lower`), and the best one over the layer, λ_low, with µ = (1 + RTOL) λ_low;
* every matrix with s ≤ µ is done; the others are certified λ_max ≤ µ by a successful
  Cholesky factorisation of µI − G with a rounding margin (Rump, BIT 2006; :func:`below`),
  one d³/3 factorisation each instead of the several d³ squarings Gram iteration needs on
  clustered spectra; a factorisation can only fail where λ_max > λ_low, and those matrices
  get their exact eigenvalues, which then are the maximum.

So the result lies in ``[max_ω σ₁, √(1 + RTOL) · max_ω σ₁]`` up to float64 rounding, relative
and of order d·10⁻¹⁶.

The symbol's Gram matrix is summed from the kernel's autocorrelation, G(ω) = K̂(ω)*K̂(ω) =
Σ_r C_r e^{2πi⟨ω, r/N⟩} with C_r = Σ_{p − q = r} W_pᵀ W_q (one product per tap pair q ≤ p, since
C_{−r} = C_rᵀ, then one matrix product per chunk of frequencies of at most CHUNK_BYTES, so
memory stays bounded), never from K̂ itself.

Dispatch by cost, B·d³ for B matrices of side d: at most EXACT_FLOPS (small layers) gets the
exact λ_max(G) from LAPACK.
"""

from __future__ import annotations

import math

import numpy as np

RTOL = 1e-3  # the upper bound is within 0.1 % of a certified lower bound
LANCZOS_STEPS = 24  # Krylov vectors per matrix for the lower bound
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
        for p in range(P):  # W_pᵀ W_q for q ≤ p, and W_qᵀ W_p = (W_pᵀ W_q)ᵀ: C_{−r} = C_rᵀ
            X = np.swapaxes((rows[:, p * d : (p + 1) * d].T @ rows[:, : (p + 1) * d]).reshape(d, p + 1, d), 0, 1)
            C[k, index[p, : p + 1]] += X  # the lags p − q are distinct over q
            C[k, index[:p, p]] += np.swapaxes(X[:p], 1, 2)
    return lags, C


def _exact(G):
    top = float(max(np.max(np.linalg.eigvalsh(G)[:, -1], initial=0.0), 0.0)) if len(G) else 0.0
    return top, top


def hermitian_max_eig(G, floor=0.0):
    """(upper, lower) bounds on max_b λ_max(G_b) over a batch of Hermitian PSD matrices, the
    upper within 1 + RTOL of the lower; ``floor`` is a certified lower bound on the maximum
    found elsewhere (other frequencies of the same layer), which the lower one starts from.

    Each matrix is scaled by its Frobenius norm s_b ≥ λ_max(G_b) (nothing over- or underflows);
    the lower bound is the best Ritz value (:func:`ritz_lower`), µ = (1 + RTOL) · lower; a
    matrix with s_b ≤ µ is done, the others are certified below µ by a Cholesky factorisation
    (:func:`below`), and the few where that fails (their λ_max is above the lower bound) get
    their exact eigenvalues, which then are the maximum."""
    with _one_thread():  # many small LAPACK calls: threads only contend
        return _max_eig(G, floor)


def _max_eig(G, floor):
    B, d = G.shape[0], G.shape[-1]
    if B * d**3 <= EXACT_FLOPS:
        return _exact(G)
    s = _frobenius(G)  # ‖G_b‖_F ≥ λ_max(G_b)
    idx = np.flatnonzero(s > 0)
    if not len(idx):
        return 0.0, 0.0
    s, Gs = s[idx], G[idx] / s[idx, None, None]
    low = ritz_lower(lambda v: np.einsum("bij,bj->bi", Gs, v), len(idx), d, G.dtype) * s
    best = max(floor, float(np.max(low)))
    mu = (1 + RTOL) * best
    upper = float(np.max(s[s <= mu], initial=0.0))  # certified by their Frobenius norm
    todo = np.flatnonzero(s > mu)
    if len(todo):
        passed = below(Gs[todo], mu / s[todo])
        if np.any(passed):
            upper = max(upper, mu)
        if not np.all(passed):  # above µ, so above the lower bound: computed exactly
            fail = todo[~passed]
            top = float(np.max(np.linalg.eigvalsh(Gs[fail])[:, -1] * s[fail]))
            best, upper = max(best, top), max(upper, top)
    return upper, best


def ritz_lower(apply, B, d, dtype, steps=None, seed=0):
    """Lower bounds on λ_max of B Hermitian PSD operators ``apply`` ((B, d) → (B, d)) of norm about
    1: xᴴAx / xᴴx (≤ λ_max) at the top Ritz vector x of a fully reorthogonalised Lanczos basis
    (Golub & Van Loan, Matrix Computations, §10.1), up to LANCZOS_STEPS vectors, fewer once settled."""
    k = min(steps or LANCZOS_STEPS, d)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((B, d)).astype(dtype)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    V, T, last = np.zeros((B, k, d), dtype), np.zeros((B, k, k)), None
    for j in range(k):
        V[:, j] = v
        w = apply(v)
        T[:, j, j] = np.real(np.sum(np.conj(v) * w, axis=1))
        for _ in range(2):  # twice is enough (Kahan, Parlett)
            w = w - np.einsum("bkd,bk->bd", V[:, : j + 1], np.einsum("bkd,bd->bk", np.conj(V[:, : j + 1]), w))
        beta = np.linalg.norm(w, axis=1)
        ok = beta > 1e-12
        if j + 1 == k or not np.any(ok):  # all invariant subspaces: the Ritz values are eigenvalues
            break
        T[:, j, j + 1] = T[:, j + 1, j] = np.where(ok, beta, 0.0)
        v = np.where(ok[:, None], w / np.where(ok, beta, 1.0)[:, None], 0.0)
        if j % 4 == 3:  # stop once the top Ritz values have settled
            top = np.linalg.eigvalsh(T[:, : j + 1, : j + 1])[:, -1]
            if last is not None and np.all(top - last <= 1e-3 * RTOL * np.abs(top)):
                break
            last = top
    V, T = V[:, : j + 1], T[:, : j + 1, : j + 1]
    _, vecs = np.linalg.eigh(T)
    x = np.einsum("bkd,bk->bd", V, vecs[:, :, -1])
    num = np.real(np.sum(np.conj(x) * apply(x), axis=1))
    den = np.real(np.sum(np.conj(x) * x, axis=1))
    return np.maximum(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0), 0.0)


def below(G, mu):
    """Per matrix, whether λ_max(G_b) ≤ µ_b is certified: the Cholesky factorisation of
    (µ_b − c_b) I − G_b succeeds, with c_b = 8(d + 2) u · d µ_b, a margin above the one under
    which a floating-point Cholesky that succeeds proves the matrix positive definite (Rump,
    "Verification of positive definiteness", BIT 46, 2006, Thm. 2.3: γ_{d+1} · trace; doubled
    for complex arithmetic). The batch is split in halves only where a factorisation fails."""
    d = G.shape[-1]
    shift = np.asarray(mu, dtype=np.float64) * (1 - 8 * (d + 2) * d * np.finfo(np.float64).eps)
    A = -G
    A[:, np.arange(d), np.arange(d)] += shift[:, None] if np.ndim(shift) else shift
    return _definite(A)


def _one_thread():
    """BLAS and LAPACK on one thread (threadpoolctl): the calls are many and small."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def _definite(A):
    try:
        np.linalg.cholesky(A)
        return np.ones(len(A), dtype=bool)
    except np.linalg.LinAlgError:
        h = len(A) // 2
        return np.concatenate([_definite(A[:h]), _definite(A[h:])]) if h else np.zeros(1, dtype=bool)


def _frobenius(M):
    F = M.reshape(len(M), -1)
    return np.sqrt(sum(np.einsum("bi,bi->b", p, p) for p in ((F.real, F.imag) if np.iscomplexobj(F) else (F,))))
