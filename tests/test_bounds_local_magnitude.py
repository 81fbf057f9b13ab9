"""The magnitude operator K ≥ |J| of the local engine and the work budget of heavy graphs,
against independent answers: dense autograd Jacobians (float64) at points sampled in the box,
K formed densely both ways (forward on every input basis vector, backward on every logit),
its exact norm by SVD, and sampling plus ascent for the end-to-end bound."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fimaudit as fa
from fimaudit.bounds.graph import Graph
from fimaudit.bounds.local import budget, magnitude
from fimaudit.bounds.local.engine import Network, Pass

from .test_bounds_local import export, jac, sampled_max

torch.set_num_threads(1)


class Mixed(nn.Module):
    """Conv, BatchNorm, max pool, a residual sum, a difference and a concatenation."""

    def __init__(self, sign=-1.0):
        super().__init__()
        self.sign = sign
        self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.c, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.pool, self.out = nn.MaxPool2d(2), nn.Linear(8 * 3 * 3, 5)

    def forward(self, x):
        u = self.pool(torch.relu(self.a(x)))
        v = torch.relu(self.bn(self.b(u))) + u
        w = torch.tanh(self.c(v)) + self.sign * 0.5 * u
        return self.out(torch.cat([v, w], dim=1).flatten(1))


def mixed(seed, positive=False):
    torch.manual_seed(seed)
    net = Mixed(1.0 if positive else -1.0).eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
        if positive:
            for prm in net.parameters():
                prm.abs_()
    return net


def dense_k(p, shape, C):
    n = int(np.prod(shape))
    forward = magnitude.forward(p, np.eye(n).reshape(n, *shape)).reshape(n, C).T
    backward = magnitude.backward(p, np.eye(C))
    return forward, backward


@pytest.mark.parametrize("seed", range(3))
def test_k_dominates_every_jacobian_in_the_box_and_its_two_directions_agree(seed):
    net, shape = mixed(seed), (2, 6, 6)
    proto = export(net, shape)
    x = np.random.default_rng(seed).random((1, *shape))
    rho = 0.05
    p = Pass(Network(Graph(proto, shape)), x, x - rho, x + rho)
    Kf, Kb = dense_k(p, shape, 5)
    assert np.allclose(Kf, Kb, rtol=1e-12, atol=1e-14)
    net64 = copy.deepcopy(net).double()
    g = np.random.default_rng(seed + 100)
    for _ in range(100):
        J = jac(net64, x[0] + rho * g.uniform(-1, 1, shape)).numpy()
        assert np.all(np.abs(J) <= Kf * (1 + 1e-6) + 1e-12)
    exact = np.linalg.norm(Kf, 2)
    assert exact * (1 - 1e-12) <= magnitude.norm_bound(p) <= exact * 1.5


def test_k_is_the_jacobian_itself_when_every_factor_is_nonnegative():
    net, shape = mixed(7, positive=True), (2, 6, 6)
    proto = export(net, shape)
    x = np.random.default_rng(7).random((1, *shape))
    p = Pass(Network(Graph(proto, shape)), x, x - 1e-9, x + 1e-9)
    J = jac(copy.deepcopy(net).double(), x[0]).numpy()
    Kf, _ = dense_k(p, shape, 5)
    assert np.allclose(Kf, J, rtol=1e-5, atol=1e-9)  # float32 folds in the exported graph
    assert np.linalg.norm(J, 2) * (1 - 1e-9) <= magnitude.norm_bound(p)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), log_rho=st.floats(-3, -1), tighten_work=st.sampled_from([0.0, 1e5, 1e12]))
def test_the_heavy_route_bounds_hold_on_sampled_points(seed, log_rho, tighten_work):
    net, shape = mixed(seed), (2, 6, 6)
    proto = export(net, shape)
    x = np.random.default_rng(seed).random((1, *shape))
    rho = 10.0**log_rho
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(budget, "ROWS_WORK", 0.0)
        mp.setattr(budget, "TIGHTEN_WORK", tighten_work)
        b = fa.local_bound(proto, x, rho, global_cap=False)
        p = Pass(Network(Graph(proto, shape)), x, x - rho, x + rho)
        assert p.net.heavy and p.spent <= tighten_work
        if tighten_work == 0:
            assert b.tightened_units[0] == 0
    assert b.lipschitz[0] == pytest.approx(magnitude.norm_bound(p), rel=1e-12)
    assert b.lipschitz[0] >= sampled_max(net, torch.tensor(x[0]), rho, n=30, steps=4) * (1 - 1e-9)
    net64 = copy.deepcopy(net).double()
    g = np.random.default_rng(seed)
    with torch.no_grad():
        for _ in range(50):
            z = net64(torch.tensor(x + rho * g.uniform(-1, 1, x.shape))).numpy()[0]
            assert np.all(b.logits_lower[0] <= z + 1e-9) and np.all(z <= b.logits_upper[0] + 1e-9)


def test_the_imagenet_graphs_are_heavy_and_small_ones_are_not():
    import os

    import onnx

    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")
    assert Network(Graph(onnx.load(light), (3, 224, 224))).heavy
    assert not Network(Graph(export(mixed(0), (2, 6, 6)), (2, 6, 6))).heavy
