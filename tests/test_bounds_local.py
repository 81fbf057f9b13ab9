"""Local certified bounds (fimaudit.bounds.local) against independent answers: the exact
Jacobian (torch autograd, float64) at the point, exhaustive enumeration of the activation
regions of tiny ReLU networks (linear programs), and sampling plus ascent inside the box."""

import copy
import itertools
import warnings

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from scipy.optimize import linprog
from torch import nn

import fimaudit as fa
from fimaudit.errors import InputShapeError, InvalidArgumentError, UnsupportedOnnxOpError

torch.set_num_threads(1)


def export(net, shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            copy.deepcopy(net).float().eval(), (torch.rand(1, *shape),), dynamo=True, external_data=False, verbose=False
        )
    return prog.model_proto


def jac(net64, x):
    x = torch.as_tensor(x, dtype=torch.float64)
    return torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], x).reshape(-1, x.numel())


def jnorm(net64, x):
    return torch.linalg.matrix_norm(jac(net64, x), 2).item()


def sampled_max(net, x, rho, n=200, steps=20, seed=0):
    """max ‖J‖₂ over random points and vertices of the box, then a projected ascent on ‖J‖
    (for smooth nets) from the best: a lower bound on the supremum over the box."""
    net64 = copy.deepcopy(net).double().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(x, dtype=torch.float64)
    pts = [x] + [x + rho * (2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1) for _ in range(n // 2)]
    pts += [x + rho * torch.sign(torch.randn(x.shape, generator=g, dtype=torch.float64)) for _ in range(n // 2)]
    norms = [jnorm(net64, p) for p in pts]
    y = pts[int(np.argmax(norms))].clone()
    for _ in range(steps):
        y.requires_grad_(True)
        J = torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], y, create_graph=True)
        (grad,) = torch.autograd.grad(torch.linalg.matrix_norm(J.reshape(J.shape[0], -1), 2), y, allow_unused=True)
        if grad is None or not torch.any(grad != 0):
            break
        y = torch.clamp(y.detach() + 0.25 * rho * grad.sign(), x - rho, x + rho)
        norms.append(jnorm(net64, y))
    return max(norms)


def mlp(d, widths, act, seed, C=3):
    torch.manual_seed(seed)
    layers, w = [], d
    for h in widths:
        layers += [nn.Linear(w, h), act()]
        w = h
    return nn.Sequential(*layers, nn.Linear(w, C)).eval()


# --- exactness: a tiny box where every unit is stable gives the Jacobian's norm itself


def odd_cnn():
    """Strides, dilation, groups, padded max pool, ceil-mode average pool, LeakyReLU, SiLU, Sigmoid."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3),
        nn.SiLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(6, 4, 1),
        nn.Sigmoid(),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 10),
        nn.GELU(approximate="tanh"),
        nn.Linear(10, 10),
    )


ZOO = ["vgg_style", "resnet_style", "densenet_style", "smooth_cnn", "odd_cnn"]


def make(name):
    from fimaudit_torch import testing

    torch.manual_seed(0)
    net = odd_cnn() if name == "odd_cnn" else getattr(testing, name)()
    return testing.with_batchnorm_statistics(net).eval()


@pytest.fixture(scope="module", params=ZOO)
def zoo(request):
    shape = {"odd_cnn": (3, 12, 12), "vgg_style": (3, 32, 32)}.get(request.param, (3, 16, 16))
    net = make(request.param)
    return request.param, net, export(net, shape), shape


def test_tiny_box_gives_the_exact_jacobian_norm(zoo):
    _, net, proto, shape = zoo
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    b = fa.local_bound(proto, x.numpy(), 1e-11, global_cap=False)
    net64 = copy.deepcopy(net).double()
    exact = [jnorm(net64, xi) for xi in x]
    # 1e-6: the exporter folds batch norms into the convs in float32, so the graph differs from
    # the torch model by float32 rounding (the MLPs below, exported without folds, agree to 1e-9)
    assert np.allclose(b.lipschitz, exact, rtol=1e-6, atol=0), (b.lipschitz, exact)
    with torch.no_grad():
        z = net64(x).numpy()
    assert np.allclose(b.logits, z, rtol=1e-6, atol=1e-9)
    assert np.all(b.logits_lower <= b.logits) and np.all(b.logits <= b.logits_upper)
    assert np.all(b.logits_upper - b.logits_lower <= 1e-8)


def test_zoo_bounds_hold_on_sampled_points(zoo):
    name, net, proto, shape = zoo
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for rho in (1e-3, 1e-2):
        b = fa.local_bound(proto, x.numpy(), rho, global_cap=False, tighten=512)
        worst = sampled_max(net, x[0], rho, n=16, steps=4 if name in ("smooth_cnn", "odd_cnn") else 0)
        assert b.lipschitz[0] >= worst * (1 - 1e-6), (name, rho, b.lipschitz, worst)
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():  # every logit on the box lies in the bounds
            pts = x + rho * (2 * torch.rand(64, *shape, generator=g, dtype=torch.float64) - 1)
            z = copy.deepcopy(net).double()(pts).numpy()
        tol = 1e-6  # float32 folds in the exported graph (see above)
        assert np.all(z >= b.logits_lower - tol) and np.all(z <= b.logits_upper + tol)


# --- exhaustive enumeration of activation regions on tiny ReLU networks


def regions_max(net, x, rho):
    """max ‖J‖₂ over the activation patterns whose region meets the box's interior (an LP
    per pattern: maximise the slack t of every sign constraint inside the box)."""
    Ws = [m.weight.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]
    bs = [m.bias.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]
    d, hidden = Ws[0].shape[1], [W.shape[0] for W in Ws[:-1]]
    best = 0.0
    for pattern in itertools.product([0, 1], repeat=sum(hidden)):
        A, c, rows, k = np.eye(d), np.zeros(d), [], 0
        for W, b, h in zip(Ws[:-1], bs[:-1], hidden):
            A, c = W @ A, W @ c + b  # pre-activation = A x + c
            s = np.array(pattern[k : k + h], float)
            for i in range(h):  # sign constraint: (2 s_i − 1)(A_i x + c_i) ≥ t
                rows.append((-(2 * s[i] - 1) * A[i], (2 * s[i] - 1) * c[i]))
            A, c, k = s[:, None] * A, s * c, k + h
        A_ub = np.array([np.append(a, 1.0) for a, _ in rows])
        b_ub = np.array([cc for _, cc in rows])
        res = linprog(
            np.append(np.zeros(d), -1.0),
            A_ub=A_ub,
            b_ub=b_ub,
            bounds=[(xi - rho, xi + rho) for xi in x] + [(None, 1.0)],
        )
        if res.status == 0 and -res.fun > 1e-9:
            best = max(best, np.linalg.norm(Ws[-1] @ A, 2))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_enumerated_regions_never_exceed_the_bound(seed):
    d, widths = 2 + seed % 2, [4, 3] if seed % 3 else [4]
    net = mlp(d, widths, nn.ReLU, seed)
    proto = export(net, (d,))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, d))
    for rho in (1e-9, 0.05, 0.3, 1.0):
        b = fa.local_bound(proto, x, rho, global_cap=False)
        exact = regions_max(net, x[0], rho)
        assert b.lipschitz[0] >= exact * (1 - 1e-9), (rho, b.lipschitz, exact)
        if rho == 1e-9:
            assert b.lipschitz[0] == pytest.approx(exact, rel=1e-9, abs=1e-12)


# --- properties over random small MLPs and CNNs

ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "leaky": lambda: nn.LeakyReLU(0.2), "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    act=st.sampled_from(sorted(ACTS)),
    d=st.integers(2, 5),
    width=st.integers(2, 8),
    depth=st.integers(1, 3),
    log_rho=st.floats(-4, 0),
)
def test_mlp_bounds_hold_on_nested_boxes(seed, act, d, width, depth, log_rho):
    # CROWN's adaptive slopes make the bounds sound on every box but not monotone in the box (a wider box
    # may pick other lines), so each radius is checked against its own sampled maximum
    net = mlp(d, [width] * depth, ACTS[act], seed)
    proto = export(net, (d,))
    x = np.random.default_rng(seed).normal(size=(1, d))
    for rho in (10.0**log_rho, 2 * 10.0**log_rho):
        b = fa.local_bound(proto, x, rho)
        assert b.lipschitz[0] <= b.global_lipschitz * (1 + 1e-12)
        worst = sampled_max(net, x[0], rho, n=40, steps=8)
        assert b.lipschitz[0] >= worst * (1 - 1e-9), (rho, b.lipschitz, worst)


def small_cnn(seed, act):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 3)
    ).eval()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from(["relu", "tanh"]), log_rho=st.floats(-3, -0.5))
def test_cnn_bounds_hold_on_sampled_points(seed, act, log_rho):
    net = small_cnn(seed, ACTS[act])
    proto = export(net, (2, 6, 6))
    x = np.random.default_rng(seed).random((1, 2, 6, 6))
    rho = 10.0**log_rho
    b = fa.local_bound(proto, x, rho)
    assert b.lipschitz[0] >= sampled_max(net, torch.tensor(x[0]), rho, n=30, steps=4) * (1 - 1e-9)


# --- certified radius and local Fisher bound


def _attack_radius(net64, x, top, r_max, seed):
    """The smallest ℓ2 radius (of a few PGD runs) at which the class changes: an upper bound
    on any sound certified radius."""
    g = torch.Generator().manual_seed(seed)
    found = np.inf
    for _ in range(4):
        delta = torch.randn(x.shape, generator=g, dtype=torch.float64) * 1e-3
        for _ in range(60):
            delta.requires_grad_(True)
            z = net64((x + delta)[None])[0]
            other = torch.cat([z[:top], z[top + 1 :]]).max()
            (grad,) = torch.autograd.grad(z[top] - other, delta)
            with torch.no_grad():
                if z[top] <= other:
                    found = min(found, delta.norm().item())
                    break
                delta = delta - 0.05 * r_max * grad / (grad.norm() + 1e-30)
                delta = delta * min(1.0, 2 * r_max / delta.norm().item())
    return found


@pytest.mark.parametrize("seed", range(4))
def test_certified_radius_is_never_beaten_by_an_attack(seed):
    d = 3
    net = mlp(d, [8, 8], nn.ReLU if seed % 2 else nn.Tanh, seed)
    proto = export(net, (d,))
    X = np.random.default_rng(seed).normal(size=(3, d))
    r = fa.certified_radius(proto, X, iterations=10)
    net64 = copy.deepcopy(net).double()
    glob = fa.lipschitz_bound(proto)
    with torch.no_grad():
        z = net64(torch.tensor(X)).numpy()
    assert np.all(r >= glob.certified_radius(z) * (1 - 1e-9))
    g = torch.Generator().manual_seed(seed)
    for i in range(3):
        top, x = int(z[i].argmax()), torch.tensor(X[i])
        assert _attack_radius(net64, x, top, max(r[i], 1e-3) * 4, seed) >= r[i]
        with torch.no_grad():  # no sampled point inside the radius changes the class
            v = torch.randn(500, d, generator=g, dtype=torch.float64)
            pts = x + v / v.norm(dim=1, keepdim=True) * r[i] * torch.rand(500, 1, generator=g, dtype=torch.float64)
            assert (net64(pts).argmax(1) == top).all()


def test_local_fisher_bound_holds_inside_the_box_and_never_exceeds_the_global_one():
    net = mlp(4, [6, 6], nn.Tanh, 1)
    proto = export(net, (4,))
    x = np.random.default_rng(1).normal(size=(2, 4))
    rho = 0.2
    b = fa.local_bound(proto, x, rho)
    net64 = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(2)
    for i in range(2):
        for _ in range(50):
            y = torch.tensor(x[i]) + rho * (2 * torch.rand(4, generator=g, dtype=torch.float64) - 1)
            J = jac(net64, y)
            p = torch.softmax(net64(y[None])[0], 0)
            F = J.T @ (torch.diag(p) - torch.outer(p, p)) @ J
            assert torch.linalg.eigvalsh(F)[-1].item() <= b.fisher_bound[i] * (1 + 1e-9)
    assert np.all(b.fisher_bound <= 0.5 * b.lipschitz**2 * (1 + 1e-12))
    assert np.all(b.fisher_bound <= 0.5 * b.global_lipschitz**2 * (1 + 1e-12))


# --- refusals


def test_quotients_of_activations_are_refused_by_name():
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 3]) for v in "xy"]
    g = helper.make_graph([helper.make_node("Div", ["x", "x"], ["y"], name="ratio")], "g", io[:1], io[1:])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOnnxOpError, match="ratio.*lipschitz_bound still works"):
        fa.local_bound(model, np.zeros((1, 3)), 0.1)


def test_bad_arguments_are_refused():
    proto = export(mlp(3, [4], nn.ReLU, 0), (3,))
    with pytest.raises(InvalidArgumentError, match="radius"):
        fa.local_bound(proto, np.zeros((1, 3)), -1.0)
    with pytest.raises(InputShapeError, match="shape"):
        fa.local_bound(proto, np.zeros((1, 4)), 0.1)
    with pytest.raises(InvalidArgumentError, match="outside input_domain"):
        fa.local_bound(proto, np.full((1, 3), 2.0), 0.1, input_domain=(0.0, 1.0))
    with pytest.raises(InvalidArgumentError, match="iterations"):
        fa.certified_radius(proto, np.zeros((1, 3)), iterations=-1)
    assert isinstance(proto, onnx.ModelProto)


def test_the_input_domain_clips_the_box():
    net = mlp(3, [5], nn.ReLU, 2)
    proto = export(net, (3,))
    x = np.full((1, 3), 0.99)
    inside = fa.local_bound(proto, x, 0.5, input_domain=(0.0, 1.0), global_cap=False)
    free = fa.local_bound(proto, x, 0.5, global_cap=False)
    assert np.all(inside.logits_upper <= free.logits_upper + 1e-12)
    assert np.all(inside.logits_lower >= free.logits_lower - 1e-12)


class Branchy(nn.Module):
    """Fan-out, a residual sum and a concatenation: the backward pass accumulates over a DAG."""

    def __init__(self, d=4, h=6):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, h)
        self.out = nn.Linear(2 * h, 3)

    def forward(self, x):
        u = torch.relu(self.a(x))
        v = torch.relu(self.b(u)) + self.c(u)
        return self.out(torch.cat([torch.relu(v), u], dim=1))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("generators", [0, 256])
def test_every_jacobian_in_the_box_lies_in_the_interval_jacobian(seed, generators):
    from fimaudit.bounds.graph import Graph
    from fimaudit.bounds.local.engine import Network, Pass

    torch.manual_seed(seed)
    net = Branchy().eval()
    proto = export(net, (4,))
    x = np.random.default_rng(seed).normal(size=(1, 4))
    rho = 0.3
    p = Pass(Network(Graph(proto, (4,))), x, x - rho, x + rho)
    Jm, Jr = p.backward(p.net.g.output, np.eye(3), generators)
    net64 = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(seed)
    for _ in range(300):
        y = torch.tensor(x[0]) + rho * (2 * torch.rand(4, generator=g, dtype=torch.float64) - 1)
        J = jac(net64, y).numpy()
        assert np.all(np.abs(J - Jm) <= Jr + 1e-12), np.max(np.abs(J - Jm) - Jr)
    if generators:
        _, plain = p.backward(p.net.g.output, np.eye(3), 0)
        assert np.all(Jr <= plain + 1e-12)  # signed error terms never widen the interval
