"""Bounds from a softmax's rows (fimaudit.bounds.local.simplex) and from the variance of a
LayerNormalization's input (fimaudit.bounds.local.centered.variance_bounds) against independent
answers: exhaustive enumeration of the LP's vertices, sampled points of the sets, and torch
float64 values and autograd Jacobians of the same weights at points of the box."""

import copy
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fimaudit.bounds.graph import Graph
from fimaudit.bounds.interval_rules import softmax_interval
from fimaudit.bounds.local import crown, simplex
from fimaudit.bounds.local.engine import Network, Pass

from .test_bounds_local import export
from .test_bounds_transformer_crown import least

torch.set_num_threads(1)


def vertex_min(c, lo, hi):
    """min c·p over {lo ≤ p ≤ hi, Σ p = 1} by enumeration: a vertex has every coordinate but
    at most one at an end, the free one fixed by the sum."""
    n, best = len(c), np.inf
    for free in range(n):
        others = [j for j in range(n) if j != free]
        for ends in itertools.product((0, 1), repeat=n - 1):
            p = np.empty(n)
            p[others] = np.where(np.array(ends) == 1, hi[others], lo[others])
            p[free] = 1.0 - p[others].sum()
            if lo[free] - 1e-12 <= p[free] <= hi[free] + 1e-12:
                best = min(best, float(c @ p))
    return best


def box_around_simplex_point(rng, n):
    p0 = rng.dirichlet(np.ones(n) * rng.choice([0.3, 1.0, 5.0]))
    lo = np.clip(p0 - rng.random(n) * rng.choice([1e-3, 0.05, 0.5]), 0.0, 1.0)
    hi = np.clip(p0 + rng.random(n) * rng.choice([1e-3, 0.05, 0.5]), 0.0, 1.0)
    return p0, lo, hi


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6))
def test_least_over_the_softmax_rows_is_the_lp_minimum(seed, n):
    rng = np.random.default_rng(seed)
    _, lo, hi = box_around_simplex_point(rng, n)
    c = rng.normal(size=n) * rng.choice([0.1, 1.0, 100.0]) + rng.choice([0.0, 50.0])
    got, want = float(simplex.least(c, lo, hi)), vertex_min(c, lo, hi)
    scale = 1e-9 * (1 + np.abs(c).sum())
    assert got <= want + scale  # a lower bound
    assert got >= want - scale  # and the minimum itself


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), log_width=st.floats(-4, 1))
def test_attention_product_range_holds_and_is_never_wider_than_midpoint_radius(seed, log_width):
    """P from a box of softmax inputs (its rows' intervals by Shi et al.'s rule), V in a box:
    every sampled P V lies in the range, which never exceeds the midpoint-radius product's."""
    rng = np.random.default_rng(seed)
    heads, t, f = 2, 5, 3
    uc, ur = rng.normal(size=(heads, t, t)) * 2, rng.random((heads, t, t)) * 10**log_width
    pl, ph = softmax_interval((uc - ur, uc + ur), 2)
    vc, vr = rng.normal(size=(heads, t, f)) + 3.0, rng.random((heads, t, f)) * 10**log_width
    low, high = simplex.attention(pl, ph, vc - vr, vc + vr)
    pm, pr = (pl + ph) / 2, (ph - pl) / 2
    rump = np.abs(pm) @ vr + pr @ np.abs(vc) + pr @ vr
    assert np.all(high - low <= 2 * rump + 1e-9 * (1 + np.abs(pm) @ np.abs(vc)))
    for _ in range(60):
        u = uc + ur * (2 * rng.random(uc.shape) - 1)
        e = np.exp(u - u.max(-1, keepdims=True))
        y = (e / e.sum(-1, keepdims=True)) @ (vc + vr * (2 * rng.random(vc.shape) - 1))
        assert np.all(y >= low - 1e-9) and np.all(y <= high + 1e-9)


def small_vit(seed):
    from fimaudit_torch.testing import small_vit as make

    torch.manual_seed(seed)
    net = make(dim=16, heads=2, depth=2, image=8).eval()
    return copy.deepcopy(net).double(), Network(Graph(export(net, (3, 8, 8)), (3, 8, 8)))


@pytest.fixture(scope="module")
def vits():
    return [small_vit(s) for s in (0, 1)]


def sampled(rng, x, rho, k):
    return x + rho * (rng.choice([-1.0, 1.0], size=x.shape) if k % 2 else 2 * rng.random(x.shape) - 1)


@settings(max_examples=4, deadline=None)
@given(which=st.integers(0, 1), seed=st.integers(0, 10**6), log_rho=st.floats(-3, -1.3))
def test_layernorm_deviation_bounds_hold_at_sampled_points(vits, which, seed, log_rho):
    """1/σ of every LayerNormalization (σ² = var + ε of its input) at points of the box lies
    in the pass's interval [w_l, w_h], which the variance bounds from the tangent and chords
    of ‖d‖² narrow."""
    _, network = vits[which]
    rng = np.random.default_rng(seed)
    x, rho = rng.random((1, 3, 8, 8)), 10**log_rho
    p = Pass(network, x, x - rho, x + rho)
    norms = [(k, n) for k, n in enumerate(network.nodes) if network.roles[k] == "layernorm"]
    assert len(norms) == 4
    for k in range(12):
        y = sampled(rng, x, rho, k)
        point = Pass(network, y, y, y, tighten=False, crown=False).point
        for _, node in norms:
            _, _, wm, wr = p.deriv[node.output[0]]
            v = point[node.input[0]].reshape(-1, 16)
            w = 1 / np.sqrt(((v - v.mean(-1, keepdims=True)) ** 2).mean(-1) + 1e-5)
            assert np.all(w >= (wm - wr)[:, 0] * (1 - 1e-9)) and np.all(w <= (wm + wr)[:, 0] * (1 + 1e-9))


def least_found(net64, G, x, rho, starts=2, steps=20):
    """The least Σ G_r ⊙ logits(x') found per row over the box: random starts, then projected
    sign-gradient descent (an upper bound on the true minimum)."""
    x0 = torch.as_tensor(x[0])
    Gt = torch.as_tensor(G.reshape(G.shape[0], -1))
    best = torch.full((G.shape[0],), np.inf, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    for _ in range(starts):
        z = x0 + rho * (2 * torch.rand((G.shape[0], *x0.shape), generator=gen, dtype=torch.float64) - 1)
        for _ in range(steps):
            z.requires_grad_(True)
            val = (net64(z) * Gt).sum(1)
            best = torch.minimum(best, val.detach())
            (g,) = torch.autograd.grad(val.sum(), z)
            z = torch.clamp(z.detach() - 0.3 * rho * g.sign(), x0 - rho, x0 + rho)
    return best.numpy()


@settings(max_examples=4, deadline=None)
@given(which=st.integers(0, 1), seed=st.integers(0, 10**6), log_rho=st.floats(-3, -1.3))
def test_vit_logit_bounds_and_jacobians_hold_through_three_attention_blocks(vits, which, seed, log_rho):
    """Three softmaxes in a row: the logits' intervals and CROWN bounds (which stop at each
    softmax with the larger of its mean-value line and the LP over its rows) and the interval
    Jacobian (its softmax rows centred) contain the values, the least values descent finds and
    the autograd Jacobians at points of the box."""
    net64, network = vits[which]
    rng = np.random.default_rng(seed)
    x, rho = rng.random((1, 3, 8, 8)), 10**log_rho
    p = Pass(network, x, x - rho, x + rho)
    out = network.g.output
    G = np.concatenate([np.eye(10), rng.normal(size=(4, 10))])
    lo, up = crown.bounds(p, out, G)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(up))
    found_lo, found_up = least_found(net64, G, x, rho), -least_found(net64, -G, x, rho)
    assert np.all(lo <= found_lo + 1e-9 * (1 + np.abs(found_lo)))
    assert np.all(up >= found_up - 1e-9 * (1 + np.abs(found_up)))
    Jm, Jr = p.backward(out, np.eye(10), 64)
    for k in range(6):
        y = torch.as_tensor(sampled(rng, x, rho, k)[0])
        J = torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], y).reshape(10, -1).numpy()
        assert np.all(np.abs(J - Jm) <= Jr + 1e-9 * (1 + np.abs(J)))
        with torch.no_grad():
            z = net64(y[None])[0].numpy()
        assert np.all(z >= p.lo[out].reshape(-1) - 1e-9) and np.all(z <= p.hi[out].reshape(-1) + 1e-9)


class TwoSoftmaxes(torch.nn.Module):
    """An attention layer and LayerNorm, then a second layer's attention weights as the output."""

    def __init__(self, d=8):
        super().__init__()
        self.q1, self.k1, self.v1 = (torch.nn.Linear(d, d) for _ in range(3))
        self.q2, self.k2 = torch.nn.Linear(d, d), torch.nn.Linear(d, d)
        self.ln = torch.nn.LayerNorm(d)

    def forward(self, x):
        a = torch.softmax(self.q1(x) @ self.k1(x).transpose(-1, -2), -1)
        h = self.ln(x + a @ self.v1(x))
        return torch.softmax(2 * self.q2(h) @ self.k2(h).transpose(-1, -2), -1).flatten(1)


class OneSoftmax(torch.nn.Module):
    """Scores affine in the input, so the bounds on their rows are exact and only the
    curvature term of log-sum-exp separates the lower end from the true least value."""

    def __init__(self, d=8):
        super().__init__()
        self.s = torch.nn.Linear(d, 4)

    def forward(self, x):
        return torch.softmax(3 * self.s(x), -1).flatten(1)


@pytest.fixture(scope="module")
def softmax_nets():
    out = []
    for make in (TwoSoftmaxes, OneSoftmax):
        torch.manual_seed(5)
        net = make().eval()
        out.append((copy.deepcopy(net).double(), Network(Graph(export(net, (4, 8)), (4, 8)))))
    return out


@settings(max_examples=8, deadline=None)
@given(which=st.integers(0, 1), seed=st.integers(0, 10**6), log_rho=st.floats(-3, -0.5))
def test_softmax_outputs_narrowed_through_log_sum_exp_hold_against_descent(softmax_nets, which, seed, log_rho):
    """Every output of the last softmax (its interval narrowed by the bounds on log p through
    log-sum-exp) contains the least and largest values projected descent finds in the box, and
    the values at sampled points."""
    net64, network = softmax_nets[which]
    rng = np.random.default_rng(seed)
    x, rho = rng.normal(size=(1, 4, 8)), 10**log_rho
    p = Pass(network, x, x - rho, x + rho)
    out = network.g.output
    lo, hi = p.lo[out].reshape(-1), p.hi[out].reshape(-1)
    G = np.eye(lo.size).reshape(lo.size, *p.point[out].shape[1:])
    found_lo, found_hi = least(net64, G, x, rho), -least(net64, -G, x, rho)
    assert np.all(lo <= found_lo + 1e-12) and np.all(hi >= found_hi - 1e-12), (
        np.max(lo - found_lo),
        np.max(found_hi - hi),
    )
    for k in range(20):
        with torch.no_grad():
            z = net64(torch.as_tensor(sampled(rng, x, rho, k))).numpy().reshape(-1)
        assert np.all(z >= lo - 1e-12) and np.all(z <= hi + 1e-12)
