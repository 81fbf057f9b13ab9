"""Local bounds on 1-D grids (N, C, L) against independent answers: torch's 1-D convolutions and
pools for the grid functions, the same weights as a 2-D graph of height 1 for every bound,
sampling plus ascent inside the box, and the exact minimal ℓ2 distance to another class of tiny
ReLU networks (every activation region and window argmax enumerated, the distance to each
region's misclassified part by projection onto its faces)."""

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from torch import nn

import fimaudit as fa
from fimaudit.bounds.graph import Graph
from fimaudit.bounds.local import grid, magnitude
from fimaudit.bounds.local.engine import Network, Pass
from fimaudit.errors import UnsupportedOnnxOpError

from .test_bounds_local import export, jac, sampled_max
from .test_bounds_local_magnitude import dense_k

torch.set_num_threads(1)

# --- the grid functions on 1-D grids against torch

layer = st.fixed_dictionaries(
    {
        "k": st.integers(1, 4),
        "s": st.integers(1, 3),
        "d": st.integers(1, 2),
        "p": st.integers(0, 2),
        "ceil": st.booleans(),
    }
)


def _node(op, lay, **extra):
    return helper.make_node(
        op,
        ["x"],
        ["y"],
        name="n",
        kernel_shape=[lay["k"]],
        strides=[lay["s"]],
        dilations=[lay["d"]],
        pads=[lay["p"], lay["p"]],
        **extra,
    )


@settings(max_examples=40, deadline=None)
@given(lay=layer, groups=st.sampled_from([1, 2]), L=st.integers(8, 12), seed=st.integers(0, 1000))
def test_a_1d_convolution_and_its_adjoint_match_torch(lay, groups, L, seed):
    rng = np.random.default_rng(seed)
    lay["p"] = min(lay["p"], lay["d"] * (lay["k"] - 1))
    x, W = rng.normal(size=(2, 2 * groups, L)), rng.normal(size=(3 * groups, 2, lay["k"]))
    want = F.conv1d(torch.tensor(x), torch.tensor(W), None, lay["s"], lay["p"], lay["d"], groups).numpy()
    geo = grid.geometry(_node("Conv", lay), x.shape, want.shape, W.shape[2:])
    y = grid.conv(x, W, geo, groups, want.shape[2:])
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    G = rng.normal(size=want.shape)  # ⟨conv x, G⟩ = ⟨x, convᵀ G⟩
    back = grid.conv_adjoint(G, W, geo, groups, (L,))
    assert back.shape == x.shape
    assert np.sum(y * G) == pytest.approx(np.sum(x * back), rel=1e-10, abs=1e-10)


@settings(max_examples=40, deadline=None)
@given(lay=layer, include=st.booleans(), L=st.integers(6, 11), seed=st.integers(0, 1000))
def test_1d_pools_match_torch(lay, include, L, seed):
    lay["k"] = max(lay["k"], 2)
    lay["d"] = 1  # torch's average pool has no dilation
    lay["p"] = min(lay["p"], lay["k"] // 2)
    x = torch.tensor(np.random.default_rng(seed).normal(size=(2, 3, L)))
    want = F.max_pool1d(x, lay["k"], lay["s"], lay["p"], ceil_mode=lay["ceil"]).numpy()
    node = _node("MaxPool", lay, ceil_mode=int(lay["ceil"]))
    geo = grid.geometry(node, x.shape, want.shape, grid.kernel_of(node))
    np.testing.assert_array_equal(grid.max_pool(x.numpy(), geo, want.shape[2:]), want)
    avg = F.avg_pool1d(x, lay["k"], lay["s"], lay["p"], ceil_mode=lay["ceil"], count_include_pad=include).numpy()
    node = _node("AveragePool", lay, ceil_mode=int(lay["ceil"]), count_include_pad=int(include))
    geo = grid.geometry(node, x.shape, avg.shape, grid.kernel_of(node))
    div = grid.avg_divisor(node, x.shape, geo, avg.shape[2:])
    np.testing.assert_allclose(grid.sum_pool(x.numpy(), geo, avg.shape[2:]) / div, avg, rtol=1e-12, atol=1e-12)


# --- a 1-D graph against the same weights as a 2-D graph of height 1


def twins(seed, cfg, L):
    """A 1-D net and the same weights as a 2-D net on (C, 1, L)."""
    k, s, d, p, groups, pool, act = (cfg[a] for a in ("k", "s", "d", "p", "groups", "pool", "act"))
    A = {"relu": nn.ReLU, "tanh": nn.Tanh}[act]

    def build(two):
        def lift(v, base):
            return (base, v) if two else v

        Conv = nn.Conv2d if two else nn.Conv1d
        layers = [Conv(2, 2 * groups, lift(k, 1), lift(s, 1), lift(p, 0), lift(d, 1), groups), A()]
        if pool == "max":
            layers.append((nn.MaxPool2d if two else nn.MaxPool1d)(lift(2, 1), lift(2, 1), ceil_mode=True))
        elif pool == "avg":
            layers.append((nn.AvgPool2d if two else nn.AvgPool1d)(lift(3, 1), lift(2, 1), lift(1, 0)))
        elif pool == "bn":
            layers.append((nn.BatchNorm2d if two else nn.BatchNorm1d)(2 * groups))
        layers += [Conv(2 * groups, 3, lift(3, 1), lift(1, 1), lift(1, 0)), nn.ReLU()]
        if pool == "gap":
            layers.append(nn.AdaptiveAvgPool2d(1) if two else nn.AdaptiveAvgPool1d(1))
        return nn.Sequential(*layers, nn.Flatten())

    torch.manual_seed(seed)
    one, two = build(False), build(True)
    with torch.no_grad():
        width = one(torch.zeros(1, 2, L)).shape[1]
        for a, b in zip(one, two):
            if isinstance(a, nn.BatchNorm1d):
                a.running_mean.normal_()
                a.running_var.uniform_(0.5, 2.0)
                a.weight.normal_()
                a.bias.normal_()
            for name, v in a.state_dict().items():
                b.state_dict()[name].copy_(v.reshape(b.state_dict()[name].shape))
    head = nn.Linear(width, 3)
    return nn.Sequential(*one, head).eval(), nn.Sequential(*two, copy.deepcopy(head)).eval()


config = st.fixed_dictionaries(
    {
        "k": st.integers(1, 3),
        "s": st.integers(1, 2),
        "d": st.integers(1, 2),
        "p": st.integers(0, 2),
        "groups": st.sampled_from([1, 2]),
        "pool": st.sampled_from(["max", "avg", "bn", "gap", "none"]),
        "act": st.sampled_from(["relu", "tanh"]),
    }
)
FIELDS = ("lipschitz", "fisher_bound", "logits", "logits_lower", "logits_upper", "margin_lower", "certified")


@settings(max_examples=12, deadline=None)
@given(cfg=config, seed=st.integers(0, 10_000), log_rho=st.floats(-3, -0.5), norm=st.sampled_from(["linf", "l2"]))
def test_a_1d_graph_has_the_bounds_of_its_height_1_twin(cfg, seed, log_rho, norm):
    L = 9
    one, two = twins(seed, cfg, L)
    x = np.random.default_rng(seed).normal(size=(2, 2, L))
    rho = 10.0**log_rho
    a = fa.local_bound(export(one, (2, L)), x, rho, global_cap=False, norm=norm)
    b = fa.local_bound(export(two, (2, 1, L)), x[:, :, None], rho, global_cap=False, norm=norm)
    for f in FIELDS:
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-12, atol=1e-14, err_msg=f)
    np.testing.assert_array_equal(a.tightened_units, b.tightened_units)


def test_the_mnist1d_layout_has_the_bounds_of_its_height_1_twin():
    # the study's 1-D CNN: Conv k=5 pad=2, ReLU, Conv k=5 stride 2 pad=2, ReLU, Linear, ReLU, Linear
    torch.manual_seed(3)
    one = nn.Sequential(
        nn.Conv1d(1, 4, 5, padding=2), nn.ReLU(), nn.Conv1d(4, 6, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten()
    )
    two = nn.Sequential(
        nn.Conv2d(1, 4, (1, 5), padding=(0, 2)),
        nn.ReLU(),
        nn.Conv2d(4, 6, (1, 5), stride=(1, 2), padding=(0, 2)),
        nn.ReLU(),
        nn.Flatten(),
    )
    with torch.no_grad():
        for a, b in zip(one, two):
            for name, v in a.state_dict().items():
                b.state_dict()[name].copy_(v.reshape(b.state_dict()[name].shape))
    head = nn.Sequential(nn.Linear(6 * 8, 8), nn.ReLU(), nn.Linear(8, 4))
    one, two = nn.Sequential(*one, head).eval(), nn.Sequential(*two, copy.deepcopy(head)).eval()
    x = np.random.default_rng(3).random((2, 1, 16))
    pa, pb = export(one, (1, 16)), export(two, (1, 1, 16))
    for rho in (0.01, 0.1):
        a, b = fa.local_bound(pa, x, rho), fa.local_bound(pb, x[:, :, None], rho)
        for f in FIELDS:
            np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-9, err_msg=f)
    ra = fa.certified_radius(pa, x, iterations=6, input_domain=(0.0, 1.0))
    rb = fa.certified_radius(pb, x[:, :, None], iterations=6, input_domain=(0.0, 1.0))
    np.testing.assert_allclose(ra, rb, rtol=1e-9)


@pytest.mark.parametrize("pool", ["max", "avg", "bn"])
def test_the_magnitude_operator_of_a_1d_graph_is_its_twins_and_dominates_every_jacobian(pool):
    cfg = {"k": 3, "s": 1, "d": 1, "p": 1, "groups": 1, "pool": pool, "act": "relu"}
    L, rho = 9, 0.05
    one, two = twins(4, cfg, L)
    x = np.random.default_rng(4).normal(size=(1, 2, L))
    pa = Pass(Network(Graph(export(one, (2, L)), (2, L))), x, x - rho, x + rho)
    y = x[:, :, None]
    pb = Pass(Network(Graph(export(two, (2, 1, L)), (2, 1, L))), y, y - rho, y + rho)
    (Ka, Ka_back), (Kb, _) = dense_k(pa, (2, L), 3), dense_k(pb, (2, 1, L), 3)
    np.testing.assert_allclose(Ka, Ka_back, rtol=1e-12, atol=1e-14)  # K v and uᵀ K are transposes
    np.testing.assert_allclose(Ka, Kb, rtol=1e-12, atol=1e-14)
    assert magnitude.norm_bound(pa) == pytest.approx(magnitude.norm_bound(pb), rel=1e-12)
    net64, g = copy.deepcopy(one).double(), np.random.default_rng(5)
    for _ in range(60):
        J = jac(net64, x[0] + rho * g.uniform(-1, 1, x.shape[1:])).numpy()
        assert np.all(np.abs(J) <= Ka * (1 + 1e-6) + 1e-12)
    assert magnitude.norm_bound(pa) >= np.linalg.norm(Ka, 2) * (1 - 1e-12)


# --- soundness on random small 1-D nets


@settings(max_examples=10, deadline=None)
@given(cfg=config, seed=st.integers(0, 10_000), log_rho=st.floats(-3, -0.3))
def test_1d_bounds_hold_on_sampled_points(cfg, seed, log_rho):
    L = 8
    net = twins(seed, cfg, L)[0]
    proto = export(net, (2, L))
    x = np.random.default_rng(seed).normal(size=(1, 2, L))
    rho = 10.0**log_rho
    b = fa.local_bound(proto, x, rho)
    worst = sampled_max(net, torch.tensor(x[0]), rho, n=30, steps=4 if cfg["act"] == "tanh" else 0)
    assert b.lipschitz[0] >= worst * (1 - 1e-6), (b.lipschitz, worst)
    assert b.lipschitz[0] <= b.global_lipschitz * (1 + 1e-12)
    g = torch.Generator().manual_seed(seed)
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():  # every logit on the box, and on the ball, lies in the bounds
        box = torch.tensor(x) + rho * (2 * torch.rand(64, 2, L, generator=g, dtype=torch.float64) - 1)
        z = net64(box).numpy()
        v = torch.randn(64, 2 * L, generator=g, dtype=torch.float64)
        t = rho * torch.rand(64, 1, generator=g, dtype=torch.float64)
        ball = torch.tensor(x) + (v / v.norm(dim=1, keepdim=True) * t).reshape(64, 2, L)
        zb = net64(ball).numpy()
    assert np.all(z >= b.logits_lower - 1e-6) and np.all(z <= b.logits_upper + 1e-6)
    c = fa.local_bound(proto, x, rho, norm="l2")
    assert np.all(zb >= c.logits_lower - 1e-6) and np.all(zb <= c.logits_upper + 1e-6)


# --- the certified radius against the exact minimal distance on tiny 1-D ReLU nets


def _dense(net, shape):
    """(W1, b1, windows, W2, b2): the conv's pre-activations W1 x + b1, the max pool's windows
    as lists of unit indices (one per pooled output, in the Linear's order; one unit each
    without a pool), and the last layer."""
    conv, lin = net[0].double(), net[-1].double()
    d = int(np.prod(shape))
    with torch.no_grad():
        b1 = conv(torch.zeros(1, *shape, dtype=torch.float64)).reshape(-1).numpy()
        W1 = (conv(torch.eye(d, dtype=torch.float64).reshape(d, *shape)).reshape(d, -1).numpy() - b1).T
        C, Lo = conv(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:]
    idx = np.arange(C * Lo).reshape(C, Lo)
    if isinstance(net[2], nn.MaxPool1d):
        k, s = net[2].kernel_size, net[2].stride
        windows = [idx[c, i : i + k].tolist() for c in range(C) for i in range(0, Lo - k + 1, s)]
    else:
        windows = [[u] for u in range(C * Lo)]
    return W1, b1, windows, lin.weight.detach().numpy(), lin.bias.detach().numpy()


def _distance(x, A, b):
    """The exact distance from x to the polyhedron {y : A y ≤ b} (inf if empty): the least over
    the faces' affine hulls {A_S y = b_S} (S independent) of x's projection where it is feasible."""
    best = np.inf
    n = len(x)
    for size in range(min(n, len(A)) + 1):
        for S in itertools.combinations(range(len(A)), size):
            As, bs = A[list(S)], b[list(S)]
            if size and np.linalg.matrix_rank(As) < size:
                continue
            y = x - (As.T @ np.linalg.solve(As @ As.T, As @ x - bs) if size else 0.0)
            if np.all(A @ y <= b + 1e-9 * (1 + np.abs(b))):
                best = min(best, float(np.linalg.norm(y - x)))
    return best


def minimal_distance(net, shape, x):
    """The least ℓ2 distance from x to a point where another class ties or wins: over every
    (ReLU signs, window argmax, class) the distance to that piece's closed polyhedron."""
    W1, b1, windows, W2, b2 = _dense(net, shape)
    h = W1 @ x + b1
    top = int(np.argmax(W2 @ np.array([max(max(h[u], 0.0) for u in w) for w in windows]) + b2))
    best = np.inf
    for signs in itertools.product([0.0, 1.0], repeat=len(h)):
        s = np.array(signs)
        for choice in itertools.product(*[range(len(w)) for w in windows]):
            rows = [(-(2 * s[i] - 1) * W1[i], (2 * s[i] - 1) * b1[i]) for i in range(len(h))]  # sign · pre ≥ 0
            for w, c in zip(windows, choice):
                a = w[c]
                rows += [(-(s[a] * W1[a] - s[o] * W1[o]), s[a] * b1[a] - s[o] * b1[o]) for o in w if o != a]
            P = np.zeros((len(windows), len(h)))
            P[np.arange(len(windows)), [w[c] for w, c in zip(windows, choice)]] = 1.0
            Az, cz = W2 @ P @ (s[:, None] * W1), W2 @ P @ (s * b1) + b2  # logits = Az x + cz on the piece
            for j in range(len(b2)):
                if j != top:  # z_j ≥ z_top
                    extra = [(Az[top] - Az[j], cz[j] - cz[top])]
                    A = np.array([r for r, _ in rows + extra])
                    bb = np.array([v for _, v in rows + extra])
                    best = min(best, _distance(x, A, bb))
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pool", [False, True])
def test_certified_radius_never_exceeds_the_exact_minimal_distance(seed, pool):
    torch.manual_seed(seed)
    if pool:  # 2 channels × 2 cells, one window of 2 per channel: 4 ReLUs, 2 windows
        shape = (1, 3)
        net = nn.Sequential(nn.Conv1d(1, 2, 2), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(2, 3))
    else:  # dilation 2 on length 4: 2 channels × 2 cells
        shape = (1, 4)
        net = nn.Sequential(nn.Conv1d(1, 2, 2, dilation=2), nn.ReLU(), nn.Flatten(), nn.Linear(4, 3))
    net.eval()
    proto = export(net, shape)
    X = np.random.default_rng(seed).normal(size=(3, *shape)) * 0.5
    r = fa.certified_radius(proto, X, iterations=10)
    with torch.no_grad():
        z = copy.deepcopy(net).double()(torch.tensor(X)).numpy()
    glob = fa.lipschitz_bound(proto).certified_radius(z)
    assert np.all(r >= glob * (1 - 1e-9))  # never below the global certificate: the test is not vacuous
    assert np.all(r > 0)
    for i in range(len(X)):
        exact = minimal_distance(net, shape, X[i].reshape(-1))
        assert r[i] <= exact * (1 + 1e-6), (i, r[i], exact)  # 1e-6: float32 weights in the graph


# --- refusals


def test_3d_grids_are_refused_by_name():
    net = nn.Sequential(nn.Conv3d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8, 2)).eval()
    proto = export(net, (1, 3, 3, 3))
    with pytest.raises(UnsupportedOnnxOpError, match="3-D grids: local bounds handle 1-D"):
        fa.local_bound(proto, np.zeros((1, 1, 3, 3, 3)), 0.1, global_cap=False)
