"""Local bounds through Transformer ops (products of two activations, softmax, LayerNormalization,
moves of the batch axis) against independent answers: torch float64 values and autograd
Jacobians of the same weights at points sampled in the box, and sampling plus ascent."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fimaudit as fa
from fimaudit.bounds.graph import Graph
from fimaudit.bounds.local.engine import Network, Pass

from .test_bounds_local import export

torch.set_num_threads(1)
T, D = 4, 8  # tokens, features


class Block(nn.Module):
    """One op of an attention layer between two linear maps (the output is the op's, flattened)."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.q, self.k, self.v = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.ln = nn.LayerNorm(D)
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        h = torch.tanh(self.v(x))  # a nonlinearity before the op: its input interval is not exact
        if self.kind == "layernorm":
            y = self.ln(h + x)
        elif self.kind == "softmax":
            y = torch.softmax(2 * self.q(h), -1)
        elif self.kind == "scores":
            y = self.q(h) @ self.k(x).transpose(-1, -2)
        elif self.kind == "product":
            y = self.q(h) * self.k(x)
        elif self.kind == "moves":  # slices, and the batch axis moved to the middle and back
            y = (h[:, 1:, ::2].transpose(0, 1) * self.q(h)[:, :-1, 1::2].transpose(0, 1)).transpose(0, 1)
        else:
            y = torch.softmax(self.q(h) @ self.k(h).transpose(-1, -2) / D**0.5, -1) @ h
        return y.flatten(1)


KINDS = ["layernorm", "softmax", "scores", "product", "moves", "attention"]


@pytest.fixture(scope="module")
def blocks():
    out = {}
    for i, kind in enumerate(KINDS):
        torch.manual_seed(i)
        net = Block(kind).eval()
        out[kind] = (net, copy.deepcopy(net).double(), Network(Graph(export(net, (T, D)), (T, D))))
    return out


def jac(net64, x):
    x = torch.as_tensor(x, dtype=torch.float64)
    return torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], x).reshape(-1, x.numel()).numpy()


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10**6), log_rho=st.floats(-3, -0.7))
def test_values_and_jacobians_in_the_box_lie_in_the_intervals(blocks, kind, seed, log_rho):
    net, net64, network = blocks[kind]
    rng = np.random.default_rng(seed)
    x, rho = rng.normal(size=(1, T, D)), 10**log_rho
    p = Pass(network, x, x - rho, x + rho)
    out = network.g.output
    lo, hi = p.lo[out].reshape(-1), p.hi[out].reshape(-1)
    size = lo.size
    Jm, Jr = p.backward(out, np.eye(size).reshape(size, *p.point[out].shape[1:]), 64)
    assert np.all(np.isfinite(Jr))
    for k in range(40):
        y = x[0] + rho * (rng.choice([-1.0, 1.0], size=x[0].shape) if k % 2 else 2 * rng.random(x[0].shape) - 1)
        with torch.no_grad():
            z = net64(torch.tensor(y)[None])[0].numpy()
        slack = 1e-9 * (1 + np.abs(z))
        assert np.all(z >= lo - slack) and np.all(z <= hi + slack), (kind, np.max(lo - z), np.max(z - hi))
        J = jac(net64, y)
        assert np.all(np.abs(J - Jm) <= Jr + 1e-9 * (1 + np.abs(J))), (kind, np.max(np.abs(J - Jm) - Jr))


def test_a_tiny_box_gives_the_autograd_jacobian(blocks):
    rng = np.random.default_rng(0)
    for kind, (_, net64, network) in blocks.items():
        x = rng.normal(size=(1, T, D))
        p = Pass(network, x, x - 1e-12, x + 1e-12)
        out = network.g.output
        size = int(np.prod(p.point[out].shape))
        Jm, Jr = p.backward(out, np.eye(size).reshape(size, *p.point[out].shape[1:]), 0)
        J = jac(net64, x[0])
        assert np.allclose(Jm, J, rtol=1e-5, atol=1e-7 * np.abs(J).max()), (kind, np.abs(Jm - J).max())
        assert np.abs(Jr).max() <= 1e-6 * np.abs(J).max(), (kind, np.abs(Jr).max())


def tiny_vit():
    from fimaudit_torch.testing import small_vit

    torch.manual_seed(0)
    return small_vit(dim=16, heads=2, depth=1, image=8).eval()


@pytest.fixture(scope="module")
def vit():
    net = tiny_vit()
    return net, export(net, (3, 8, 8))


def test_vit_tiny_box_is_the_exact_jacobian_norm(vit):
    net, proto = vit
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = fa.local_bound(proto, x.numpy(), 1e-12, global_cap=False)
    net64 = copy.deepcopy(net).double()
    J = jac(net64, x[0])
    assert np.isclose(b.lipschitz[0], np.linalg.norm(J, 2), rtol=1e-5), (b.lipschitz[0], np.linalg.norm(J, 2))
    with torch.no_grad():
        assert np.allclose(b.logits[0], net64(x)[0].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rho", [1e-3, 1e-2])
def test_vit_bound_holds_against_sampling_and_ascent(vit, rho):
    from fimaudit_torch.testing import worst_jacobian_norm_in_box

    net, proto = vit
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    b = fa.local_bound(proto, x.numpy(), rho, global_cap=False)
    measured = worst_jacobian_norm_in_box(net, x[0] - rho, x[0] + rho, starts=4, steps=4)
    assert b.lipschitz[0] >= measured, (b.lipschitz[0], measured)
    with torch.no_grad():
        z = copy.deepcopy(net).double()(x + rho * (2 * torch.rand(8, 3, 8, 8, dtype=torch.float64) - 1)).numpy()
    assert np.all(z >= b.logits_lower - 1e-9) and np.all(z <= b.logits_upper + 1e-9)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), log_width=st.floats(-6, 3.5))
def test_softmax_interval_holds_for_any_width_and_is_never_nan(seed, log_width):
    from fimaudit.bounds.interval_rules import softmax_interval

    rng = np.random.default_rng(seed)
    c = rng.normal(size=(3, 5)) * 3
    r = rng.random((3, 5)) * 10**log_width
    lo, hi = softmax_interval((c - r, c + r), 1)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)
    for _ in range(50):
        u = c + r * (2 * rng.random(c.shape) - 1)
        e = np.exp(u - u.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        assert np.all(p >= lo - 1e-12) and np.all(p <= hi + 1e-12)


def test_softmax_interval_with_infinite_ends_is_sound_and_never_nan():
    """Unbounded logits (a global bound on an unbounded domain) and one dominant logit, where a
    difference of sums cancels: every end is a number in [0, 1] and contains the softmax."""
    from fimaudit.bounds.interval_rules import softmax_interval

    inf = np.inf
    lo = np.array([[-inf, 0.0, 1.0], [-inf, -inf, 2.0], [800.0, -800.0, 0.0], [-1.0, -inf, -inf]])
    hi = np.array([[inf, 0.5, 1.0], [0.0, -inf, 2.0], [801.0, -799.0, 0.0], [-1.0, 3.0, -inf]])
    plo, phi = softmax_interval((lo, hi), 1)
    assert np.all(np.isfinite(plo)) and np.all(np.isfinite(phi)) and np.all((0 <= plo) & (plo <= phi) & (phi <= 1))
    assert phi[1, 1] < 1e-300 and phi[3, 2] < 1e-300  # a logit at −inf has probability 0 (the cap: e^−700)
    assert plo[2, 0] == pytest.approx(1.0) and phi[2, 1] < 1e-300  # one logit dominates by 800
    rng = np.random.default_rng(0)
    for _ in range(200):
        with np.errstate(invalid="ignore"):  # inf − inf in the discarded branch
            u = np.where(np.isfinite(lo) & np.isfinite(hi), lo + (hi - lo) * rng.random(lo.shape), 0.0)
        below = np.minimum(hi, rng.normal(size=lo.shape) * 50)  # lo = −inf: anything up to hi
        u = np.where(np.isneginf(hi), -inf, np.where(np.isfinite(lo), u, below))
        u = np.where(np.isposinf(hi) & np.isfinite(lo), lo + rng.exponential(50, lo.shape), u)
        e = np.exp(u - u.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        assert np.all(p >= plo - 1e-12) and np.all(p <= phi + 1e-12)


def test_the_global_cap_of_a_transformer_is_taken_on_the_input_domain(vit):
    """A ViT has no global constant on all of R^d, but one on a declared domain: local bounds
    and certified radii with ``input_domain`` compute it there (as lipschitz_bound does) and cap
    by it, instead of failing; capping never lowers a radius, and the capped bound holds against
    sampling and ascent in the box."""
    from fimaudit_torch.testing import worst_jacobian_norm_in_box

    net, proto = vit
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.8 + 0.1
    with pytest.raises(fa.errors.UnsupportedOnnxOpError):
        fa.lipschitz_bound(proto)  # no domain: no global constant
    want = fa.lipschitz_bound(proto, input_domain=(0.0, 1.0)).lipschitz
    b = fa.local_bound(proto, x.numpy(), 1e-2, input_domain=(0.0, 1.0))
    assert b.global_lipschitz == pytest.approx(want)
    assert b.lipschitz[0] <= want * (1 + 1e-12)
    assert b.lipschitz[0] >= worst_jacobian_norm_in_box(net, x[0] - 1e-2, x[0] + 1e-2, starts=2, steps=4)
    capped = fa.certified_radius(proto, x.numpy(), input_domain=(0.0, 1.0), iterations=3)
    free = fa.certified_radius(proto, x.numpy(), input_domain=(0.0, 1.0), iterations=3, global_cap=False)
    assert capped[0] >= free[0] * (1 - 1e-9)
