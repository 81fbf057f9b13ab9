"""CROWN linear bounds (fimaudit.bounds.local.crown, .relax) against independent answers: dense
grids for every activation's lines, float64 torch values sampled and ascended inside the box or
ball, closed forms on linear nets, linear programs over every ReLU region of tiny nets, and PGD
against the certified ℓ2 radius."""

import copy
import functools
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from scipy.optimize import linprog
from torch import nn

import fimaudit as fa
from fimaudit.bounds.graph import Graph
from fimaudit.bounds.local import activations, crown, relax
from fimaudit.bounds.local.engine import Network, Pass
from fimaudit.errors import InvalidArgumentError

from .test_bounds_local import _attack_radius, export, mlp

torch.set_num_threads(1)

# --- the lines of every activation, on dense grids

KINDS = [
    ("Relu", {}),
    ("LeakyRelu", {"alpha": 0.1}),
    ("LeakyRelu", {"alpha": 3.0}),
    ("Sigmoid", {}),
    ("Tanh", {}),
    ("Gelu", {}),
    ("gelu_tanh", {}),
    ("Silu", {}),
]


@settings(max_examples=40, deadline=None)
@given(
    which=st.integers(0, len(KINDS) - 1),
    centre=st.floats(-12, 12),
    log_width=st.floats(-9, 1.5),
    zero=st.booleans(),
)
def test_relaxation_lines_hold_on_a_dense_grid(which, centre, log_width, zero):
    op, attrs = KINDS[which]
    node = helper.make_node(op if op != "gelu_tanh" else "Gelu", ["z"], ["y"], **attrs)
    width = 0.0 if zero else 10.0**log_width
    lo, hi = np.array([centre - width / 2, -width, 0.0]), np.array([centre + width / 2, width / 3, width])
    al, bl, au, bu = relax.lines(op, node, lo, hi)
    z = lo + np.linspace(0, 1, 20001)[:, None] * (hi - lo)
    f = activations.value(op, node, z)
    tol = 1e-12 * (1 + np.abs(z))
    assert np.all(al * z + bl <= f + tol) and np.all(f <= au * z + bu + tol)
    if op not in ("Relu", "LeakyRelu"):  # sampled lines stay close to the function: gap ≤ chord deviation + slack
        gap = (au - al) * z + (bu - bl)
        assert np.all(gap <= 2 * relax.CURVATURE[op] * (hi - lo) ** 2 / 8 * 1.01 + 1e-10)


def test_relu_lines_are_the_chord_and_the_adaptive_slope():
    node = helper.make_node("Relu", ["z"], ["y"])
    al, bl, au, bu = relax.lines("Relu", node, np.array([-1.0, -3.0, 0.5, -2.0]), np.array([3.0, 1.0, 2.0, -1.0]))
    np.testing.assert_allclose(au, [0.75, 0.25, 1.0, 0.0])
    np.testing.assert_allclose(bu, [0.75, 0.75, 0.0, 0.0])
    np.testing.assert_allclose(al, [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(bl, 0.0)


# --- bounds on logits contain every sampled and ascended value


def _pass(proto, shape, x, rho, ball, **kw):
    net = Network(Graph(proto, shape))
    return net, Pass(net, x, x - rho, x + rho, ball=rho if ball else None, **kw)


def _logit_bounds(net, p):
    out = net.g.output
    C = p.point[out].size
    lo, up = crown.bounds(p, out, np.eye(C).reshape((C, *net.g.shape(out)[1:])))
    return lo, up


def _extremes(net64, x, rho, ball, C, seed):
    """Per logit, the min and max over random points of the set and a projected ascent."""
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(x, dtype=torch.float64)

    def project(d):
        if ball:
            n = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-300)
            return d * (rho / n).clamp(max=1.0).reshape(-1, *[1] * (d.ndim - 1))
        return d.clamp(-rho, rho)

    d = project(rho * torch.randn(400, *x.shape[1:], generator=g, dtype=torch.float64))
    with torch.no_grad():
        z = net64(x + d)
    low, high = z.min(0).values, z.max(0).values
    for j in range(C):
        for sign in (1.0, -1.0):
            d = project(rho * torch.randn(3, *x.shape[1:], generator=g, dtype=torch.float64))
            for _ in range(10):
                d.requires_grad_(True)
                (grad,) = torch.autograd.grad((sign * net64(x + d)[:, j]).sum(), d)
                with torch.no_grad():
                    step = grad / grad.reshape(3, -1).norm(dim=1).clamp_min(1e-300).reshape(-1, *[1] * (d.ndim - 1))
                    d = project(d + 0.2 * rho * (step if ball else grad.sign()))
            with torch.no_grad():
                v = net64(x + d)[:, j]
            low[j], high[j] = min(low[j], v.min()), max(high[j], v.max())
    return low.numpy(), high.numpy()


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv(torch.relu(x)))


@functools.cache
def _nets():
    return tuple((name, net, export(net, shape), shape) for name, net, shape in _make_nets())


def _make_nets():
    torch.manual_seed(3)
    yield "mlp", mlp(4, [8, 8, 8], nn.ReLU, 3), (4,)
    yield "tanh", mlp(4, [8, 8], nn.Tanh, 4), (4,)
    yield "gelu", mlp(4, [8, 8], nn.GELU, 5), (4,)
    torch.manual_seed(6)
    cnn = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), Residual(4), nn.Flatten())
    yield "cnn", nn.Sequential(cnn, nn.Linear(4 * 3 * 3, 3)).eval(), (2, 6, 6)
    torch.manual_seed(7)
    silu = nn.Sequential(nn.Conv2d(2, 3, 3), nn.SiLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3), nn.Sigmoid())
    yield "silu", nn.Sequential(silu, nn.Linear(3, 3)).eval(), (2, 6, 6)


@pytest.mark.parametrize("ball, rho", [(False, 0.02), (True, 0.3)])
def test_crown_bounds_contain_every_sampled_and_ascended_logit(ball, rho):
    for k, (name, net, proto, shape) in enumerate(_nets()):
        x = np.random.default_rng(k).random((1, *shape))
        g, p = _pass(proto, shape, x, rho, ball)
        lo, up = _logit_bounds(g, p)
        low, high = _extremes(copy.deepcopy(net).double(), x, rho, ball, lo.size, k)
        assert np.all(lo <= low + 1e-9) and np.all(up >= high - 1e-9), (name, lo - low, up - high)
        b = fa.local_bound(proto, x, rho, norm="l2" if ball else "linf", global_cap=False)
        assert np.all(b.logits_lower <= low + 1e-9) and np.all(b.logits_upper >= high - 1e-9), name


def test_crown_is_exact_on_a_linear_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 5 * 5, 6), nn.Linear(6, 4)).eval()
    proto = export(net, (2, 5, 5))
    x = np.random.default_rng(0).random((1, 2, 5, 5))
    net64 = copy.deepcopy(net).double()
    J = torch.autograd.functional.jacobian(lambda a: net64(a)[0], torch.tensor(x)).reshape(4, -1).numpy()
    with torch.no_grad():
        z = net64(torch.tensor(x))[0].numpy()
    for ball, reach in ((False, np.abs(J).sum(1)), (True, np.linalg.norm(J, axis=1))):
        g, p = _pass(proto, (2, 5, 5), x, 0.1, ball)
        lo, up = _logit_bounds(g, p)
        np.testing.assert_allclose(lo, z - 0.1 * reach, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(up, z + 0.1 * reach, rtol=1e-10, atol=1e-12)


def test_crown_is_tighter_than_intervals_on_a_six_layer_net():
    net = mlp(6, [32] * 6, nn.ReLU, 11, C=5)
    proto = export(net, (6,))
    x = np.random.default_rng(11).random((1, 6))
    widths = {}
    for crown_on in (False, True):
        g, p = _pass(proto, (6,), x, 0.05, False, crown=crown_on)
        out = g.g.output
        widths[crown_on] = p.hi[out] - p.lo[out]
        if crown_on:
            lo, up = _logit_bounds(g, p)
            widths[crown_on] = np.minimum(widths[crown_on], (up - lo).reshape(widths[crown_on].shape))
    assert np.all(widths[True] <= widths[False] + 1e-12)
    assert widths[True].sum() < 0.5 * widths[False].sum(), widths


# --- every ReLU region of tiny nets: linear programs give the exact extremes of each logit


def regions_extremes(net, x, rho):
    Ws = [m.weight.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]
    bs = [m.bias.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]
    d, hidden, C = Ws[0].shape[1], [W.shape[0] for W in Ws[:-1]], Ws[-1].shape[0]
    low, high = np.full(C, np.inf), np.full(C, -np.inf)
    for pattern in itertools.product([0, 1], repeat=sum(hidden)):
        A, c, rows, k = np.eye(d), np.zeros(d), [], 0
        for W, b, h in zip(Ws[:-1], bs[:-1], hidden):
            A, c = W @ A, W @ c + b
            s = np.array(pattern[k : k + h], float)
            rows += [(-(2 * s[i] - 1) * A[i], (2 * s[i] - 1) * c[i]) for i in range(h)]
            A, c, k = s[:, None] * A, s * c, k + h
        A, c = Ws[-1] @ A, Ws[-1] @ c + bs[-1]
        A_ub, b_ub = np.array([a for a, _ in rows]), np.array([v for _, v in rows])
        box = [(v - rho, v + rho) for v in x]
        if linprog(np.zeros(d), A_ub=A_ub, b_ub=b_ub, bounds=box).status != 0:
            continue  # the region does not meet the box
        for j in range(C):
            for sign in (1.0, -1.0):
                res = linprog(sign * A[j], A_ub=A_ub, b_ub=b_ub, bounds=box)
                if res.status == 0:
                    v = A[j] @ res.x + c[j]
                    low[j], high[j] = min(low[j], v), max(high[j], v)
    return low, high


@pytest.mark.parametrize("seed", range(3))
def test_enumerated_regions_lie_inside_the_crown_bounds(seed):
    net = mlp(2, [3, 3], nn.ReLU, seed)
    proto = export(net, (2,))
    x = np.random.default_rng(seed).normal(size=(1, 2))
    for rho in (0.05, 0.5):
        g, p = _pass(proto, (2,), x, rho, False)
        lo, up = _logit_bounds(g, p)
        low, high = regions_extremes(net, x[0], rho)
        assert np.all(lo <= low + 1e-9) and np.all(up >= high - 1e-9), (lo - low, up - high)


# --- certified ℓ2 radius: never beaten by an attack, never below the global route


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from(["relu", "tanh"]), width=st.integers(4, 12))
def test_certified_l2_radius_is_never_beaten_and_never_below_the_global_route(seed, act, width):
    d = 3
    net = mlp(d, [width, width], nn.ReLU if act == "relu" else nn.Tanh, seed)
    proto = export(net, (d,))
    X = np.random.default_rng(seed).normal(size=(2, d))
    r = fa.certified_radius(proto, X, iterations=6)
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():
        z = net64(torch.tensor(X)).numpy()
    assert np.all(r >= fa.lipschitz_bound(proto).certified_radius(z) * (1 - 1e-9))
    for i in range(2):
        top = int(z[i].argmax())
        assert _attack_radius(net64, torch.tensor(X[i]), top, max(r[i], 1e-3) * 4, seed) >= r[i]


def test_l2_ball_bounds_are_no_looser_than_the_box_that_holds_it():
    net = mlp(5, [16, 16, 16], nn.ReLU, 2)
    proto = export(net, (5,))
    x = np.random.default_rng(2).random((2, 5))
    box = fa.local_bound(proto, x, 0.1, global_cap=False)
    ball = fa.local_bound(proto, x, 0.1, global_cap=False, norm="l2")
    assert np.all(ball.logits_upper - ball.logits_lower <= box.logits_upper - box.logits_lower + 1e-12)
    assert np.all(ball.lipschitz <= box.lipschitz * (1 + 1e-12))
    with pytest.raises(InvalidArgumentError, match="norm must be 'linf'"):
        fa.local_bound(proto, x, 0.1, norm="l3")


# --- max pools: cells CROWN proves below the window's best leave the interval Jacobian


def test_settled_max_pools_keep_every_jacobian_in_the_interval_jacobian():
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
    )
    net = nn.Sequential(net, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).eval()
    proto = export(net, (2, 8, 8))
    x = np.random.default_rng(5).random((1, 2, 8, 8))
    rho = 0.02
    ambiguous = {}
    for crown_on in (False, True):
        g, p = _pass(proto, (2, 8, 8), x, rho, False, crown=crown_on)
        ambiguous[crown_on] = sum(int(np.sum(w[1] > 0)) for v in p.pool.values() for w in v[2])
    assert ambiguous[True] < ambiguous[False], ambiguous  # CROWN settles cells interval arithmetic cannot
    Jm, Jr = p.backward(g.g.output, np.eye(3), 256)
    net64 = copy.deepcopy(net).double()
    gen = torch.Generator().manual_seed(5)
    for k in range(200):
        u = torch.rand(x.shape[1:], generator=gen, dtype=torch.float64)
        y = torch.tensor(x[0]) + rho * (2 * (u if k % 2 else (u > 0.5).double()) - 1)
        J = torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], y).reshape(3, -1).numpy()
        assert np.all(np.abs(J - Jm) <= Jr + 1e-12), np.max(np.abs(J - Jm) - Jr)
