"""CROWN through Transformer ops (fimaudit.bounds.local.lnrelax, .prodrelax, .meanvalue,
.centered) against independent answers: torch float64 values at sampled points of the box and
projected descent on each bounded row, dense grids for the scalar line, and a QP solver for the
least norm of the centred box."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fimaudit.bounds.graph import Graph
from fimaudit.bounds.local import centered, crown, lnrelax
from fimaudit.bounds.local.engine import Network, Pass

from .test_bounds_local import export
from .test_bounds_transformer import KINDS, Block, D, T

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def blocks():
    out = {}
    for i, kind in enumerate(KINDS):
        torch.manual_seed(10 + i)
        net = Block(kind).eval()
        out[kind] = (copy.deepcopy(net).double(), Network(Graph(export(net, (T, D)), (T, D))))
    return out


def least(net64, G, x, rho, starts=3, steps=30):
    """The least Σ G_r ⊙ y(x') found per row r over the box: sampled corners, then projected
    gradient descent from each start (an upper bound on the true minimum)."""
    x0 = torch.as_tensor(x[0])
    Gt = torch.as_tensor(G.reshape(G.shape[0], -1))
    best = torch.full((G.shape[0],), np.inf, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    for _ in range(starts):
        z = (x0 + rho * (2 * torch.rand((G.shape[0], *x0.shape), generator=gen, dtype=torch.float64) - 1)).clone()
        for _ in range(steps):
            z.requires_grad_(True)
            val = (net64(z).reshape(G.shape[0], -1) * Gt).sum(1)
            best = torch.minimum(best, val.detach())
            (g,) = torch.autograd.grad(val.sum(), z)
            z = torch.clamp(z.detach() - 0.3 * rho * g.sign(), x0 - rho, x0 + rho)
    return best.numpy()


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 10**6), log_rho=st.floats(-2.5, -0.5))
def test_crown_bounds_through_products_softmax_and_layernorm_hold(blocks, kind, seed, log_rho):
    """Each row's CROWN lower bound (and upper bound, through −G) is at most the least value
    that sampling and descent find in the box."""
    net64, network = blocks[kind]
    rng = np.random.default_rng(seed)
    x, rho = rng.normal(size=(1, T, D)), 10**log_rho
    p = Pass(network, x, x - rho, x + rho)
    out = network.g.output
    G = rng.normal(size=(6, *p.point[out].shape[1:]))
    lo, up = crown.bounds(p, out, G)
    assert not np.any(np.isnan(lo)) and not np.any(np.isnan(up))
    found_lo, found_up = least(net64, G, x, rho), -least(net64, -G, x, rho)
    slack = 1e-9 * (1 + np.abs(found_lo) + np.abs(found_up))
    assert np.all(lo <= found_lo + slack), (kind, np.max(lo - found_lo))
    assert np.all(up >= found_up - slack), (kind, np.max(found_up - up))


@pytest.mark.parametrize("kind", ["layernorm", "scores", "product"])
def test_crown_through_the_op_is_finite_and_tighter_than_stopping(blocks, kind):
    """Linear rules through LayerNorm and products give finite bounds where the walk used to stop."""
    net64, network = blocks[kind]
    rng = np.random.default_rng(1)
    x, rho = rng.normal(size=(1, T, D)), 0.01
    p = Pass(network, x, x - rho, x + rho)
    out = network.g.output
    G = np.eye(p.point[out].size).reshape(-1, *p.point[out].shape[1:])
    lo, up = crown.bounds(p, out, G)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(up))
    with torch.no_grad():
        z = net64(torch.as_tensor(x)).numpy().reshape(-1)
    assert np.all(lo <= z + 1e-9) and np.all(z <= up + 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    lo=st.floats(-5, 5),
    width=st.floats(0, 10),
    wl=st.floats(1e-3, 10),
    ratio=st.floats(1, 5),
)
def test_the_layernorm_line_lies_below_w_times_s_on_a_dense_grid(lo, width, wl, ratio):
    up, wh = lo + width, wl * ratio
    a, b = lnrelax.line_below(np.array(lo), np.array(up), np.array(wl), np.array(wh))
    s = np.linspace(lo, up, 401)
    for w in np.linspace(wl, wh, 9):
        assert np.all(a * s + b <= w * s + 1e-12 * (1 + np.abs(w * s)))
    if lo >= 0 or up <= 0:  # one sign: the line is the least w s itself
        assert np.allclose(a * s + b, np.minimum(wl * s, wh * s))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 7))
def test_least_norm_of_the_centred_box_is_a_sharp_lower_bound(seed, n):
    """Against the primal minimiser of min ‖d‖² s.t. l ≤ d ≤ u, Σ d = 0 (KKT: d = clip(μ, l, u)
    with Σ clip(μ, l, u) = 0, a piecewise-linear root found exactly between breakpoints), and
    against feasible points."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=n) * rng.choice([0.1, 1, 3])
    c -= c.mean()
    r = rng.random(n) * rng.choice([0.01, 0.5, 3])
    lo, hi = c - r, c + r
    bound = float(centered.least_square_norm(lo[None], hi[None])[0])
    g = lambda mu: np.clip(mu, lo, hi).sum()  # noqa: E731  non-decreasing, g(min lo) ≤ 0 ≤ g(max hi)
    knots = np.sort(np.concatenate([lo, hi]))
    vals = np.array([g(t) for t in knots])
    j = int(np.searchsorted(vals, 0.0))  # vals[j-1] < 0 ≤ vals[j]: g is linear between those knots
    mu = (
        knots[j]
        if j == 0 or vals[j] == 0
        else knots[j - 1] - vals[j - 1] * (knots[j] - knots[j - 1]) / (vals[j] - vals[j - 1])
    )
    d = np.clip(mu, lo, hi)
    best = float(d @ d)
    assert abs(d.sum()) <= 1e-9 * (1 + np.abs(d).sum())
    assert bound <= best + 1e-9 * (1 + best)
    assert bound >= best - 1e-6 * (1 + best)  # sharp: the dual optimum is the minimum
    for _ in range(20):  # feasible points of the centred box: d = c + t (d₀ − c) stays in it
        d0 = lo + (hi - lo) * rng.random(n)
        d0 -= d0.mean()
        inside = np.all((d0 >= lo - 1e-15) & (d0 <= hi + 1e-15))
        if inside:
            assert bound <= d0 @ d0 + 1e-12


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 8), log_eps=st.floats(-6, 0), log_spread=st.floats(-4, 0.5))
def test_the_deviation_lines_hold_on_the_centred_box(seed, n, log_eps, log_spread):
    """The lines below and above w = (mean(d²) + ε)^(-1/2) hold at every point of a centred box
    whose variance interval holds them (points, box and interval built from the points)."""
    rng = np.random.default_rng(seed)
    d0 = rng.normal(size=n) * rng.choice([0.1, 1.0, 5.0])
    d0 -= d0.mean()
    pts = d0 + 10**log_spread * rng.normal(size=(30, n)) * rng.random(n)
    pts -= pts.mean(1, keepdims=True)
    pts[0] = d0
    eps = 10**log_eps
    Q = (pts * pts).mean(1) + eps
    dl = pts.min(0) - rng.random(n) * 10**log_spread
    dh = pts.max(0) + rng.random(n) * 10**log_spread
    ql, qh = Q.min() * rng.uniform(0.5, 1), Q.max() * rng.uniform(1, 2)
    ql = max(ql, eps)
    wl, wh = np.array([qh**-0.5]), np.array([ql**-0.5])
    (e0, e), (f0, f) = lnrelax.w_lines(d0[None], eps, dl[None], dh[None], wl, wh)
    w = Q**-0.5
    slack = 1e-10 * (1 + w)
    assert np.all(e0[0] + pts @ e[0] <= w + slack), np.max(e0[0] + pts @ e[0] - w)
    assert np.all(f0[0] + pts @ f[0] >= w - slack), np.max(w - f0[0] - pts @ f[0])


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6), log_rho=st.floats(-2.5, -0.3))
def test_the_layernorm_relaxation_lies_below_at_sampled_points(blocks, seed, log_rho):
    """lnrelax.lower's rows and shift, read from the LayerNorm's input, lie below Σ L ⊙ y at
    vertices and random points of the box (values by the graph's own forward pass, which the
    other tests check against torch)."""
    _, network = blocks["layernorm"]
    node = next(n for k, n in enumerate(network.nodes) if network.roles[k] == "layernorm")
    rng = np.random.default_rng(seed)
    x, rho = rng.normal(size=(1, T, D)), 10**log_rho
    p = Pass(network, x, x - rho, x + rho)
    v, out = node.input[0], node.output[0]
    L = rng.normal(size=(5, *p.point[out].shape[1:]))
    rows, shift = lnrelax.lower(p, node, L)
    for k in range(40):
        y = x + rho * (rng.choice([-1.0, 1.0], size=x.shape) if k % 2 else 2 * rng.random(x.shape) - 1)
        at = Pass(network, y, y, y, tighten=False, crown=False).point
        lhs = (L * at[out]).reshape(5, -1).sum(1)
        rhs = (rows * at[v]).reshape(5, -1).sum(1) + shift
        assert np.all(lhs >= rhs - 1e-9 * (1 + np.abs(lhs))), np.max(rhs - lhs)
