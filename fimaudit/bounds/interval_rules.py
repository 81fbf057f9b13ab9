r"""Interval rules for the ops that need more than monotonicity or linearity.

* Softmax (:func:`softmax_interval`, from pairwise differences):
  ``p_i ∈ [e^{lo_i} / (e^{lo_i} + Σ_{j≠i} e^{hi_j}), e^{hi_i} / (e^{hi_i} + Σ_{j≠i} e^{lo_j})]``;
* LayerNormalization: x̂ = (x − μ)/σ lies within ``x̂(c) ± ‖r‖₂ / σ_min`` (x̂ is
  (1/σ_min)-Lipschitz on the box, ``σ_min² = v_min + ε`` with ``v_min`` the least variance on
  the box, :func:`min_variance`), within the same form around the row's value at the input
  box's centre with the reach L ρ of :class:`Domain` (where σ ≥ σ(c) − Lρ/√m, often far
  above the box's floor), and within ``|x̂_i| ≤ min(√(m−1), max|x_i − μ| / σ_min)``; then
  scale and shift;
* LRN: ``y_c = a_c D_c^{−β}`` has the sign of a_c and ``k ≤ D_c ≤ D_max``, with
  ``D_max = k + (α/n) Σ_{j∈N(c)} max(lo_j², hi_j²)``, so ``y_c ∈ [lo_c·s(lo_c), hi_c·s'(hi_c)]``
  with the factor k^{−β} on the side away from 0 and D_max^{−β} on the side towards it;
* GELU: decreasing below its minimiser and increasing above it (x* ≈ −0.7518, value −0.16997;
  −0.7525 and −0.17004 for the tanh approximation), so the ends bound it unless the interval
  straddles [−0.7525, −0.75], where −0.17005 is a lower bound for both forms.

Reference: Gowal et al., 2018, "On the effectiveness of interval bound propagation".
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UnsupportedOnnxOpError
from .rules import attr, lrn_params

GELU_FLOOR = -0.17005  # below the minimum of both GELU forms


def mul(a, b):
    p = np.stack(np.broadcast_arrays(a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]))
    return p.min(axis=0), p.max(axis=0)


def reciprocal(iv, node):
    lo, hi = iv
    if np.any((lo <= 0) & (hi >= 0)):
        raise UnsupportedOnnxOpError(
            f"{node.op_type} node {node.name!r} divides by an interval that contains 0 on the declared input domain: "
            "no finite bound; narrow input_domain"
        )
    return 1.0 / hi, 1.0 / lo


def power(iv, e, node):
    lo, hi = iv
    if e == 2.0:
        return np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(lo * lo, hi * hi)), np.maximum(lo * lo, hi * hi)
    if np.all(lo > 0):  # x^e is monotone on the positive axis
        return lo**e, hi**e
    raise UnsupportedOnnxOpError(
        f"Pow node {node.name!r} with exponent {e} on an interval that reaches 0 or below: no interval rule"
    )


SOFTMAX_CHUNK = 1 << 22  # pairwise exponentials formed at once


def softmax_interval(iv, axis):
    """The softmax bounds above along ``axis``, as ``1/(1 + Σ_{j≠i} e^{hi_j − lo_i})`` and
    ``1/(1 + Σ_{j≠i} e^{lo_j − hi_i})``: from pairwise differences, never a difference of sums,
    so wide or infinite intervals give 0 and 1, never NaN or a cancelled sum (an exponent
    capped at 700 only widens the bounds). Rows go a chunk at a time (``SOFTMAX_CHUNK``)."""
    lo, hi = (np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1) for a in iv)
    m = lo.shape[-1]
    off = 1.0 - np.eye(m)
    flat_lo, flat_hi = lo.reshape(-1, m), hi.reshape(-1, m)
    out_lo, out_hi = np.empty_like(flat_lo), np.empty_like(flat_hi)
    step = max(1, SOFTMAX_CHUNK // max(1, m * m))
    for s in range(0, flat_lo.shape[0], step):
        a, b = flat_lo[s : s + step], flat_hi[s : s + step]
        with np.errstate(over="ignore", invalid="ignore"):  # NaN exponents (inf − inf) become the cap
            up = (np.exp(np.fmin(b[:, None, :] - a[:, :, None], 700.0)) * off).sum(-1)
            down = (np.exp(np.fmin(a[:, None, :] - b[:, :, None], 700.0)) * off).sum(-1)
        out_lo[s : s + step], out_hi[s : s + step] = 1.0 / (1.0 + up), 1.0 / (1.0 + down)
    return np.moveaxis(out_lo.reshape(lo.shape), -1, axis), np.moveaxis(out_hi.reshape(hi.shape), -1, axis)


def min_variance(lo, hi):
    """min over the box lo ≤ x ≤ hi of the population variance (1/m) Σ (x_i − x̄)², per row
    (last axis). The variance is min_c (1/m) Σ (x_i − c)², so its minimum over the box is
    min_c (1/m) Σ dist(c, [lo_i, hi_i])², a convex piecewise quadratic in c whose minimiser is
    a breakpoint or the stationary point of one piece: all are checked."""
    lo2, hi2 = lo.reshape(-1, lo.shape[-1]), hi.reshape(-1, hi.shape[-1])
    out = np.empty(lo2.shape[0])
    for k in range(lo2.shape[0]):
        a, b = lo2[k], hi2[k]
        pts = np.sort(np.concatenate([a, b]))  # at least 2 breakpoints
        # on a piece (between consecutive breakpoints) the set {i: c > b_i} and {i: c < a_i} is fixed
        mids = (pts[:-1] + pts[1:]) / 2
        above = mids[:, None] > b[None, :]
        below = mids[:, None] < a[None, :]
        num = (above * b).sum(1) + (below * a).sum(1)
        cnt = above.sum(1) + below.sum(1)
        stat = np.where(cnt > 0, num / np.maximum(cnt, 1), mids)
        stat = np.clip(stat, pts[:-1], pts[1:])
        cands = np.concatenate([pts, stat])
        d = np.maximum(a[None, :] - cands[:, None], 0) + np.maximum(cands[:, None] - b[None, :], 0)
        out[k] = np.min((d * d).mean(1))
    return out.reshape(lo.shape[:-1])


def layer_norm_rows(node, iv):
    """(lo, hi) reshaped to (rows, m), m the size of the normalised trailing axes."""
    lo, hi = iv
    m = math.prod(lo.shape[attr(node, "axis", -1) % lo.ndim :])
    return lo.reshape(-1, m), hi.reshape(-1, m)


def sigma_floor(node, iv, domain=None, name=None):
    """Per row, (σ_box, σ): lower bounds on √(var + ε) over the row's box, and over the box
    intersected with the ball ‖row(x) − row(c)‖ ≤ L ρ (L the tensor's Lipschitz bound, ρ the
    input box's radius): σ is (1/√m)-Lipschitz in the row, so σ(x) ≥ σ(c) − Lρ/√m there."""
    lo, hi = layer_norm_rows(node, iv)
    m = lo.shape[1]
    eps = attr(node, "epsilon", 1e-5)
    v = min_variance(lo, hi)
    box_floor = np.sqrt(v + eps)
    if domain is None or name not in domain.centre or not np.isfinite(domain.reach(name)):
        return box_floor, box_floor
    c = domain.centre[name].reshape(-1, m)
    ball = np.maximum(c.std(axis=1) - domain.reach(name) / math.sqrt(m), 0.0)
    return box_floor, np.sqrt(np.maximum(v, ball**2) + eps)


def layer_norm(node, graph, box, domain=None):
    name = node.input[0]
    iv = box[name]
    lo, hi = layer_norm_rows(node, iv)
    m = lo.shape[1]
    eps = attr(node, "epsilon", 1e-5)
    s_box, s_all = (f[:, None] for f in sigma_floor(node, iv, domain, name))
    mu_lo, mu_hi = lo.mean(1, keepdims=True), hi.mean(1, keepdims=True)
    dev = np.maximum(np.abs(hi - mu_lo), np.abs(mu_hi - lo))
    xlo = xhi = np.minimum(math.sqrt(max(m - 1, 1)), dev / s_all)
    xlo = -xlo

    def around(c, reach, floor):  # mean-value form: x̂ is (1/floor)-Lipschitz on the segment
        at = (c - c.mean(1, keepdims=True)) / np.sqrt(c.var(1, keepdims=True) + eps)
        return at - reach / floor, at + reach / floor

    a, b = around((lo + hi) / 2, np.linalg.norm((hi - lo) / 2, axis=1, keepdims=True), s_box)
    xlo, xhi = np.maximum(xlo, a), np.minimum(xhi, b)
    if s_all is not s_box and domain is not None:
        a, b = around(domain.centre[name].reshape(-1, m), domain.reach(name), s_all)
        xlo, xhi = np.maximum(xlo, a), np.minimum(xhi, b)
    gamma = graph.const(node.input[1]).astype(np.float64) if len(node.input) > 1 and node.input[1] else 1.0
    beta = graph.const(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
    ylo, yhi = mul((xlo.reshape(iv[0].shape), xhi.reshape(iv[0].shape)), (gamma, gamma))
    return [(ylo + beta, yhi + beta)]


def lrn_interval(iv, node):
    lo, hi = iv
    n, a, b, k = lrn_params(node)
    sq = np.maximum(lo * lo, hi * hi)
    C = sq.shape[1]
    before, after = (n - 1) // 2, n - 1 - (n - 1) // 2  # N(c) = [c − before, c + after] ∩ [0, C)
    csum = np.concatenate([np.zeros_like(sq[:, :1]), np.cumsum(sq, axis=1)], axis=1)
    c = np.arange(C)
    window = np.take(csum, np.minimum(c + after + 1, C), axis=1) - np.take(csum, np.maximum(c - before, 0), axis=1)
    small = (k + a / n * window) ** -b  # D_max^{−β}
    big = k**-b
    return np.where(lo >= 0, lo * small, lo * big), np.where(hi >= 0, hi * big, hi * small)


def gelu(iv, approximate):
    lo, hi = iv
    from scipy.special import erf

    def f(x):
        if approximate in (b"tanh", "tanh"):
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))

    straddle = (lo <= -0.75) & (hi >= -0.7525)
    return np.where(straddle, GELU_FLOOR, np.minimum(f(lo), f(hi))), np.maximum(f(lo), f(hi))


def matmul_intervals(node, a, b, c=None):
    """A MatMul/Gemm of two intervals (and a Gemm's bias interval c), midpoint-radius:
    ``Ac Bc ± (|Ac| Br + Ar |Bc| + Ar Br)``."""
    (alo, ahi), (blo, bhi) = a, b
    if node.op_type == "Gemm":
        if attr(node, "transA", 0):
            alo, ahi = alo.T, ahi.T
        if attr(node, "transB", 0):
            blo, bhi = blo.T, bhi.T
    ac, ar, bc, br = (alo + ahi) / 2, (ahi - alo) / 2, (blo + bhi) / 2, (bhi - blo) / 2
    centre = ac @ bc
    radius = np.abs(ac) @ br + ar @ np.abs(bc) + ar @ br
    if node.op_type == "Gemm":
        alpha = attr(node, "alpha", 1.0)
        centre, radius = alpha * centre, abs(alpha) * radius
        if c is not None:
            clo, chi = c
            beta = attr(node, "beta", 1.0)
            centre, radius = centre + beta * (clo + chi) / 2, radius + abs(beta) * (chi - clo) / 2
    return centre - radius, centre + radius
