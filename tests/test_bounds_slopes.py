"""Optimised ReLU lower slopes (fimaudit.bounds.local.slopes, α-CROWN) against independent
answers: central finite differences of the concrete bound in float64, float64 torch values at
points sampled in the box or ball for random slopes in range, plain CROWN on the same pass, and
the exact smallest ℓ2 distance to another class on tiny 2-D ReLU nets (every region's polygon,
enumerated)."""

import copy
import functools
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fimaudit as fa
from fimaudit.bounds.graph import Graph
from fimaudit.bounds.local import crown, slopes
from fimaudit.bounds.local.engine import Network, Pass
from fimaudit.errors import InvalidArgumentError

from .test_bounds_local import export, mlp

torch.set_num_threads(1)


def leaky(a):
    return lambda: nn.LeakyReLU(a)


def small_cnn(act, seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        act(),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 6),
        act(),
        nn.Linear(6, 3),
    ).eval()


def small_cnn1d(act, seed):  # 1-D grids: the replay's max pool in the grid's own rank
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=1), act(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(3 * 4, 5), act(), nn.Linear(5, 3)
    ).eval()


def small_gap(act, seed):  # a global average pool (ReduceMean in the graph) carrying many rows
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        act(),
        nn.Conv2d(4, 5, 3, padding=1),
        act(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    ).eval()


@functools.cache
def _model(kind, act_name, seed):
    act = {"relu": nn.ReLU, "leaky": leaky(0.2), "leaky_steep": leaky(0.7)}[act_name]
    if kind == "mlp":
        net, shape = mlp(3, [7, 6], act, seed), (3,)
    elif kind == "cnn1d":
        net, shape = small_cnn1d(act, seed), (2, 8)
    elif kind == "gap":
        net, shape = small_gap(act, seed), (1, 4, 4)
    else:
        net, shape = small_cnn(act, seed), (1, 6, 6)
    return net, export(net, shape), shape


def _setup(kind, act_name, seed, rho, ball):
    net, proto, shape = _model(kind, act_name, seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, *shape)) * (0.5 if kind == "mlp" else 1.0)
    N = Network(Graph(proto, shape))
    p = Pass(N, x, x - rho, x + rho, ball=rho if ball else None)
    return net, N, p, x, rng


def _random_slopes(p, t, m, rng):
    found = slopes._ranges(p, t)
    return {o: rng.uniform(lo, hi, size=(m, *lo.shape[1:])) for o, (k, lo, hi) in found.items()}


def _bound(p, t, G, alphas, extra=None):
    return slopes._concrete(p, *crown.lower(p, t, G, alphas, extra=extra))[0]


def _inside(rng, x, rho, ball, n):
    """n points of the box (or ball) of radius rho around x: its corners' region and its inside."""
    d = rng.normal(size=(n, *x.shape[1:]))
    if ball:
        norms = np.linalg.norm(d.reshape(n, -1), axis=1).reshape(-1, *[1] * (d.ndim - 1))
        d = d / norms * rho * rng.random((n, *[1] * (d.ndim - 1))) ** (1 / d[0].size)
    else:
        d = rho * np.where(rng.random(d.shape) < 0.5, np.sign(d), np.tanh(d))
    return x + d


# --- the gradient of the concrete bound in the slopes: central finite differences


@pytest.mark.parametrize(
    "kind,act_name,ball",
    [
        ("mlp", "relu", False),
        ("mlp", "leaky", True),
        ("cnn", "relu", True),
        ("cnn", "leaky", False),
        ("cnn1d", "relu", True),
        ("gap", "relu", False),
    ],
)
def test_slope_gradient_matches_central_differences(kind, act_name, ball):
    _, N, p, x, rng = _setup(kind, act_name, 1, 0.4, ball)
    out = N.g.output
    G = rng.normal(size=(2, *N.g.shape(out)[1:]))
    alphas = _random_slopes(p, out, len(G), rng)
    assert sum(int((lo < hi).sum()) for _, lo, hi in slopes._ranges(p, out).values()) > 0  # something to optimise
    # rows added at a pre-activation (a split multiplier's, :mod:`.branch`): its gradient is the adjoint there
    z = N.tensor_input(N.producer[next(iter(alphas))])
    extra = {z: rng.normal(size=(len(G), *p.lo[z].shape[1:]))}
    tape = []
    Lam, beta = crown.lower(p, out, G, alphas, tape, extra)
    grads, adj = slopes._replay(p, tape, alphas, slopes._concrete(p, Lam, beta)[1])
    h, checked = 1e-6, 0
    for o, a in alphas.items():
        lo, hi = slopes._ranges(p, out)[o][1:]
        free = np.argwhere(np.broadcast_to(lo < hi, a.shape))
        for idx in free[rng.permutation(len(free))[:12]]:
            idx = tuple(idx)
            up, dn = {k: v.copy() for k, v in alphas.items()}, {k: v.copy() for k, v in alphas.items()}
            up[o][idx] += h
            dn[o][idx] -= h
            fd = (_bound(p, out, G, up, extra) - _bound(p, out, G, dn, extra))[idx[0]] / (2 * h)
            assert abs(fd - grads[o][idx]) <= 1e-6 * (1 + abs(fd)), (o, idx, fd, grads[o][idx])
            checked += 1
    for idx in rng.permutation(np.argwhere(np.ones(extra[z].shape, bool)))[:12]:
        idx = tuple(idx)
        up, dn = {z: extra[z].copy()}, {z: extra[z].copy()}
        up[z][idx] += h
        dn[z][idx] -= h
        fd = (_bound(p, out, G, alphas, up) - _bound(p, out, G, alphas, dn))[idx[0]] / (2 * h)
        assert abs(fd - adj[z][idx]) <= 1e-6 * (1 + abs(fd)), (z, idx, fd, adj[z][idx])
        checked += 1
    assert checked > 0


# --- soundness: any slopes in range give a bound no sampled point beats


@settings(max_examples=8, deadline=None)
@given(
    kind=st.sampled_from(["mlp", "cnn"]),
    act_name=st.sampled_from(["relu", "leaky", "leaky_steep"]),
    seed=st.integers(0, 3),
    rho=st.floats(0.05, 1.0),
    ball=st.booleans(),
    draw=st.integers(0, 10_000),
)
def test_random_slopes_in_range_give_sound_bounds(kind, act_name, seed, rho, ball, draw):
    net, N, p, x, _ = _setup(kind, act_name, seed, rho, ball)
    rng = np.random.default_rng(draw)
    out = N.g.output
    G = rng.normal(size=(4, *N.g.shape(out)[1:]))
    low = _bound(p, out, G, _random_slopes(p, out, len(G), rng))
    pts = _inside(rng, x, rho, ball, 3000)
    with torch.no_grad():
        z = copy.deepcopy(net).double()(torch.from_numpy(pts)).numpy()
    vals = z.reshape(len(pts), -1) @ G.reshape(len(G), -1).T
    assert np.all(vals.min(0) >= low - 1e-9 * (1 + np.abs(low))), (vals.min(0), low)


@pytest.mark.parametrize(
    "kind,act_name", [("mlp", "relu"), ("mlp", "leaky"), ("cnn", "relu"), ("cnn1d", "relu"), ("gap", "relu")]
)
@pytest.mark.parametrize("ball", [False, True])
def test_optimised_bounds_are_sound_and_never_below_plain_crown(kind, act_name, ball):
    rho = 0.5
    net, N, p, x, rng = _setup(kind, act_name, 2, rho, ball)
    out = N.g.output
    C = p.point[out].size
    G = np.concatenate([np.eye(C), np.eye(C)[[0, 0]] - np.eye(C)[[1, 2]]]).reshape((C + 2, *N.g.shape(out)[1:]))
    plain_lo, plain_up = crown.bounds(p, out, G)
    lo, up = slopes.bounds(p, out, G, 30)
    assert np.all(lo >= plain_lo) and np.all(up <= plain_up)
    assert np.sum(lo - plain_lo) + np.sum(plain_up - up) > 1e-6  # the ascent moved something
    pts = _inside(rng, x, rho, ball, 3000)
    with torch.no_grad():
        vals = copy.deepcopy(net).double()(torch.from_numpy(pts)).numpy().reshape(len(pts), -1) @ G.reshape(C + 2, -1).T
    assert np.all(vals.min(0) >= lo - 1e-9) and np.all(vals.max(0) <= up + 1e-9)


def test_graphs_with_other_activations_get_plain_crown():
    net = mlp(3, [6, 6], nn.Tanh, 0)
    N = Network(Graph(export(net, (3,)), (3,)))
    x = np.random.default_rng(0).normal(size=(1, 3))
    p = Pass(N, x, x - 0.3, x + 0.3)
    G = np.eye(3)
    assert all(
        np.array_equal(a, b) for a, b in zip(slopes.bounds(p, N.g.output, G, 10), crown.bounds(p, N.g.output, G))
    )


def test_slope_steps_must_be_a_count():
    proto = export(mlp(3, [4], nn.ReLU, 0), (3,))
    for bad in (-1, 1.5, True, 1001):
        with pytest.raises(InvalidArgumentError, match="alpha must be an integer"):
            fa.local_bound(proto, np.zeros((1, 3)), 0.1, alpha=bad)
    with pytest.raises(ValueError, match="alpha must be an integer"):
        fa.certified_radius(proto, np.zeros((1, 3)), alpha=-2)


# --- certified ℓ2 radii with optimised slopes never exceed the exact distance to another class


def _exact_distance(net, x):
    """The smallest ℓ2 distance from x (2-D) to a point of another class: per activation
    pattern and class j, the polygon where that pattern holds and z_j ≥ z_top is cut out by
    lines, and the nearest point of a polygon is x, a projection onto an edge line, or a vertex."""
    Ws = [m.weight.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]
    bs = [m.bias.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]
    hidden = [W.shape[0] for W in Ws[:-1]]
    with torch.no_grad():
        top = int(net.double()(torch.from_numpy(x[None]))[0].argmax())
    best = np.inf
    for pattern in itertools.product([0, 1], repeat=sum(hidden)):
        A, c, rows, k = np.eye(2), np.zeros(2), [], 0
        for W, b, h in zip(Ws[:-1], bs[:-1], hidden):
            A, c = W @ A, W @ c + b
            s = np.array(pattern[k : k + h], float)
            rows += [(-(2 * s[i] - 1) * A[i], (2 * s[i] - 1) * c[i]) for i in range(h)]  # a·x' ≤ v
            A, c, k = s[:, None] * A, s * c, k + h
        A, c = Ws[-1] @ A, Ws[-1] @ c + bs[-1]
        for j in range(len(c)):
            if j == top:
                continue
            P = rows + [(A[top] - A[j], c[j] - c[top])]
            M, v = np.array([a for a, _ in P]), np.array([b for _, b in P])
            cands = [x]
            for a, b in P:
                if a @ a > 1e-18:
                    cands.append(x - (a @ x - b) / (a @ a) * a)
            for (a1, b1), (a2, b2) in itertools.combinations(P, 2):
                D = np.array([a1, a2])
                if abs(np.linalg.det(D)) > 1e-12:
                    cands.append(np.linalg.solve(D, [b1, b2]))
            for q in cands:
                if np.all(M @ q <= v + 1e-9 * (1 + np.abs(v))):
                    best = min(best, float(np.linalg.norm(q - x)))
    return best


@pytest.mark.parametrize("seed", range(3))
def test_certified_radius_with_slopes_never_exceeds_the_exact_distance(seed):
    net = mlp(2, [4, 4], nn.ReLU, seed)
    proto = export(net, (2,))
    X = np.random.default_rng(seed).normal(size=(2, 2))
    r = fa.certified_radius(proto, X, iterations=8, alpha=25)
    r0 = fa.certified_radius(proto, X, iterations=8, alpha=0)
    for i in range(2):
        exact = _exact_distance(copy.deepcopy(net), X[i])
        assert 0 < r[i] <= exact * (1 + 1e-9), (r[i], exact)
        assert r0[i] <= exact * (1 + 1e-9)


def test_rows_past_the_work_cap_get_plain_crown(monkeypatch):
    _, N, p, _, _ = _setup("mlp", "relu", 0, 0.5, True)
    out, G = N.g.output, np.eye(3)
    assert not np.array_equal(slopes.bounds(p, out, G, 10)[0], crown.bounds(p, out, G)[0])
    monkeypatch.setattr(slopes, "WORK", 0.0)
    assert all(np.array_equal(a, b) for a, b in zip(slopes.bounds(p, out, G, 10), crown.bounds(p, out, G)))
