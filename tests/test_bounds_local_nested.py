"""Bounds reused between nested balls (fimaudit.bounds.local.nested, .search) against independent
answers: float64 torch values sampled and ascended inside the smaller ball, every tensor's value
at sampled points, the outer pass's intervals, and the full path of a ball's certificate."""

import copy
import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fimaudit as fa
from fimaudit.bounds.graph import Graph
from fimaudit.bounds.local import crown, nested
from fimaudit.bounds.local.api import _Setup
from fimaudit.bounds.local.engine import Network, Pass
from fimaudit.errors import InvalidArgumentError

from .test_bounds_crown import Residual, _extremes
from .test_bounds_local import _attack_radius, export

torch.set_num_threads(1)
SHAPE = (2, 5, 5)


@functools.cache
def _net(seed):
    """A small residual CNN (conv, ReLU, two residual blocks, linear), its ONNX graph and Network."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), Residual(4), Residual(4), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)
    ).eval()
    proto = export(net, SHAPE)
    return net, proto, Network(Graph(proto, SHAPE))


def _ball(net, x, rho, outer=None):
    if outer is None:
        return Pass(net, x, x - rho, x + rho, ball=rho)
    return nested.NestedPass(net, x, x - rho, x + rho, outer, ball=rho)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2),
    xs=st.integers(0, 10_000),
    log_rho=st.floats(-1.5, 0.3),
    shrink=st.floats(0.2, 0.95),
)
def test_a_ball_inside_a_bounded_one_keeps_every_value_and_no_interval_grows(seed, xs, log_rho, shrink):
    torch_net, _, net = _net(seed)
    x = np.random.default_rng(xs).random((1, *SHAPE))
    rho = 10.0**log_rho
    big = _ball(net, x, rho)
    outer = nested.intervals(big)
    small = _ball(net, x, rho * shrink, outer)
    for t, (lo, hi) in outer.items():  # never wider than the outer set's intervals
        assert np.all(small.lo[t] >= lo) and np.all(small.hi[t] <= hi), t
    g = np.random.default_rng(xs + 1)
    d = g.normal(size=(64, *SHAPE))
    scale = rho * shrink * g.random(64) ** (1 / d[0].size) / np.linalg.norm(d.reshape(64, -1), axis=1)
    d *= scale.reshape(-1, 1, 1, 1)
    d[0] = 0.0
    net64 = copy.deepcopy(torch_net).double()
    for v in x + d:  # every tensor's value at sampled points of the smaller ball lies in its interval
        at = Pass(net, v[None], v[None], v[None], tighten=False)
        for t in small.lo:
            assert np.all(small.lo[t] <= at.point[t] + 1e-9) and np.all(at.point[t] <= small.hi[t] + 1e-9), t
        with torch.no_grad():
            z = net64(torch.tensor(v[None])).numpy()
        np.testing.assert_allclose(at.point[net.g.output], z, rtol=1e-9, atol=1e-9)
    out = net.g.output
    lo, up = crown.bounds(small, out, np.eye(3).reshape((3, *net.g.shape(out)[1:])))
    low, high = _extremes(net64, x, rho * shrink, True, 3, xs)  # random points and ascent in the smaller ball
    assert np.all(lo <= low + 1e-9) and np.all(up >= high - 1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_a_balls_certificate_alone_is_the_one_of_the_full_bounds(seed):
    _, proto, _ = _net(seed)
    X = np.random.default_rng(seed).random((2, *SHAPE))
    s = _Setup(proto, X, None, "categorical", 1.0, (0.0, 1.0), True, 1 << 32, 4096, "l2")
    seen = set()
    for i in range(2):
        for rho in (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0):
            full, alone = s.one(i, rho), s.one(i, rho, certificate_only=True)
            assert alone["certified"] == full["certified"], (i, rho)
            seen.add(alone["certified"] == rho)
            if "logits" not in alone:  # the shortcut is taken only where CROWN proves every margin positive
                assert full["margin_lower"] > 0
    assert seen == {True, False}  # both branches ran


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2), xs=st.integers(0, 10_000))
def test_the_reused_radius_is_never_beaten_and_never_below_the_global_route(seed, xs):
    torch_net, proto, _ = _net(seed)
    X = np.random.default_rng(xs).random((2, *SHAPE))
    r = fa.certified_radius(proto, X, iterations=6)
    fresh = fa.certified_radius(proto, X, iterations=6, reuse=False)
    net64 = copy.deepcopy(torch_net).double()
    with torch.no_grad():
        z = net64(torch.tensor(X)).numpy()
    glob = fa.lipschitz_bound(proto)
    assert np.all(r >= glob.certified_radius(z) * (1 - 1e-9)) and np.all(fresh >= glob.certified_radius(z) * (1 - 1e-9))
    g = torch.Generator().manual_seed(xs)
    for i in range(2):
        top, x = int(z[i].argmax()), torch.tensor(X[i])
        assert _attack_radius(net64, x, top, max(r[i], 1e-3) * 4, xs) >= r[i]
        with torch.no_grad():  # no sampled point inside the radius changes the class
            v = torch.randn(300, *SHAPE, generator=g, dtype=torch.float64)
            n = v.reshape(300, -1).norm(dim=1).reshape(-1, 1, 1, 1)
            pts = x + v / n * r[i] * torch.rand(300, 1, 1, 1, generator=g, dtype=torch.float64)
            assert (net64(pts).argmax(1) == top).all()


def test_reuse_must_be_a_bool():
    _, proto, _ = _net(0)
    with pytest.raises(InvalidArgumentError, match="reuse must be True"):
        fa.certified_radius(proto, np.zeros((1, *SHAPE)), reuse="yes")
