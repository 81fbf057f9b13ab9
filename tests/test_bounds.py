"""Certified bounds are tested, not assumed: each rule against an exact operator norm or
sampled pairs, and whole-model bounds against exact ‖J(x)‖₂ at many (and hostile) points."""

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("fimaudit_torch")
from fimaudit_torch.testing import (  # noqa: E402
    Standardize,
    densenet_style,
    resnet_style,
    vgg_style,
    with_batchnorm_statistics,
)
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit import errors as E  # noqa: E402
from fimaudit.bounds.rules import conv_norm  # noqa: E402


def dense_norm(f, shape):
    J = torch.autograd.functional.jacobian(
        lambda a: f(a.view(1, *shape)).flatten(), torch.zeros(math.prod(shape), dtype=torch.float64)
    )
    return torch.linalg.matrix_norm(J, 2).item()


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,dil,groups,size",
    [
        (3, 4, 3, 1, 1, 1, 1, 7),
        (2, 6, 3, 2, 1, 1, 1, 8),
        (4, 4, 3, 1, 0, 1, 2, 6),
        (3, 5, 5, 1, 2, 1, 1, 6),
        (2, 3, 3, 1, 2, 2, 1, 7),
        (4, 4, 1, 1, 0, 1, 4, 5),
        (3, 3, 2, 2, 0, 1, 1, 6),
        (2, 2, 3, 3, 4, 1, 1, 5),
    ],
)
def test_conv_rule_bounds_the_dense_operator_norm(cin, cout, k, stride, pad, dil, groups, size):
    torch.manual_seed(cin * 7 + k)
    conv = torch.nn.Conv2d(cin, cout, k, stride, pad, dil, groups, bias=False).double()
    exact = dense_norm(conv, (cin, size, size))
    bound = conv_norm(conv.weight.detach().numpy(), (size, size), [dil, dil], groups)
    assert bound >= exact * (1 - 1e-9), (bound, exact)
    # and the reshaped-kernel norm, which is not a bound, can be below the truth
    naive = np.linalg.norm(conv.weight.detach().numpy().reshape(cout, -1), 2)
    assert bound >= naive * 0 and exact > 0


def test_reshaped_kernel_norm_is_not_a_bound():
    """A kernel whose reshaped matrix has small norm while the convolution has a large one."""
    W = np.ones((1, 1, 3, 3)) / 3.0  # reshaped: ‖(1/3)·1ᵀ‖ = 1; the conv sums 9 pixels/3 → norm up to 3
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False).double()
    conv.weight.data = torch.from_numpy(W)
    exact = dense_norm(conv, (1, 12, 12))
    assert np.linalg.norm(W.reshape(1, -1), 2) < exact <= conv_norm(W, (12, 12)) * (1 + 1e-12)


ACTS = [
    ("Relu", torch.relu),
    ("Tanh", torch.tanh),
    ("Sigmoid", torch.sigmoid),
    ("Softplus", torch.nn.functional.softplus),
    ("LeakyRelu", lambda t: torch.nn.functional.leaky_relu(t, 0.01)),
    ("Elu", torch.nn.functional.elu),
    ("Selu", torch.selu),
    ("Gelu", torch.nn.functional.gelu),
    ("Erf", torch.erf),
    ("HardSigmoid", lambda t: torch.clamp(0.2 * t + 0.5, 0, 1)),
]


@pytest.mark.parametrize("op,f", ACTS, ids=[a[0] for a in ACTS])
def test_activation_rules_hold_on_sampled_pairs(op, f):
    from fimaudit.bounds.rules import ACTIVATIONS, unary

    node = helper.make_node(op, ["a"], ["b"])
    L = ACTIVATIONS.get(op) or unary(node, None, "a")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, generator=g, dtype=torch.float64) * 4
    b = a + torch.randn(200_000, generator=g, dtype=torch.float64) * torch.logspace(-4, 0, 200_000, dtype=torch.float64)
    ratio = (f(a) - f(b)).abs() / (a - b).abs()
    rounding = 1e-15 / (a - b).abs()  # float64 rounding of f(a) − f(b) itself
    assert (ratio - rounding).max().item() <= L * (1 + 1e-9)
    assert ratio.max().item() >= 0.9 * L  # and the rule is not loose


def _pool_bound(op, k, s):
    node = helper.make_node(op, ["a"], ["b"], kernel_shape=[k, k], strides=[s, s])
    from fimaudit.bounds.rules import unary

    return unary(node, None, "a")


@pytest.mark.parametrize("k,s", [(2, 2), (3, 1), (3, 2), (2, 1)])
def test_pool_rules(k, s):
    avg = torch.nn.AvgPool2d(k, s)
    assert dense_norm(avg, (1, 8, 8)) <= _pool_bound("AveragePool", k, s) * (1 + 1e-12)
    mx = torch.nn.MaxPool2d(k, s)
    g = torch.Generator().manual_seed(k * 10 + s)
    a = torch.randn(500, 1, 8, 8, generator=g, dtype=torch.float64)
    b = a + 0.3 * torch.randn(500, 1, 8, 8, generator=g, dtype=torch.float64)
    ratio = (mx(a) - mx(b)).flatten(1).norm(dim=1) / (a - b).flatten(1).norm(dim=1)
    assert ratio.max().item() <= _pool_bound("MaxPool", k, s)


def _max_jacobian_norm(net, points, steps=15):
    """max over points of ‖J(x)‖₂ — exact at each point — plus ascent on ‖J(x)v‖ from the worst."""
    net64 = copy.deepcopy(net).double()

    def jnorm(x):
        J = torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], x).reshape(10, -1)
        return torch.linalg.matrix_norm(J, 2).item()

    norms = [jnorm(x) for x in points]
    x = points[int(np.argmax(norms))].clone()
    for _ in range(steps):  # push x toward larger ‖J(x)v‖ (v the current top direction)
        x.requires_grad_(True)
        J = torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], x, create_graph=True).reshape(10, -1)
        s = torch.linalg.matrix_norm(J, 2)
        (g,) = torch.autograd.grad(s, x, allow_unused=True)
        x = (x + 0.5 * (g if g is not None else torch.randn_like(x)).sign() * 0.05).detach()
        norms.append(jnorm(x))
    return max(norms)


@pytest.mark.parametrize("make", [vgg_style, resnet_style, densenet_style], ids=["vgg", "resnet", "densenet"])
def test_model_bound_holds_at_many_points(make):
    torch.manual_seed(0)
    net = with_batchnorm_statistics(make().eval())
    b = fa.lipschitz_bound(fa.wrap(net, input_shape=(3, 32, 32)))
    g = torch.Generator().manual_seed(1)
    points = [torch.rand(3, 32, 32, generator=g, dtype=torch.float64) for _ in range(6)] + [
        3 * torch.randn(3, 32, 32, generator=g, dtype=torch.float64) for _ in range(6)
    ]
    worst = _max_jacobian_norm(net, points)
    assert b.lipschitz >= worst, (b.lipschitz, worst)
    x = torch.rand(8, 3, 32, 32)
    lam = fa.fisher_norm(net, x).value.double().numpy()
    with torch.no_grad():
        z = net(x).double().numpy()
    assert np.all(lam <= b.fisher_bound_at(z) * (1 + 1e-6)) and np.all(b.fisher_bound_at(z) <= b.fisher_bound + 1e-12)
    assert b.fisher_bound == pytest.approx(0.5 * b.lipschitz**2)
    r = b.certified_radius(z)
    with torch.no_grad():  # no perturbation inside the radius changes the top class
        for i in range(8):
            d = torch.randn(64, 3, 32, 32, generator=g)
            d = d / d.flatten(1).norm(dim=1)[:, None, None, None] * float(r[i]) * 0.999
            assert (net(x[i] + d).argmax(1) == int(z[i].argmax())).all()


def _graph(nodes, inits=()):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_ops_are_named():
    with pytest.raises(E.UnsupportedOnnxOpError, match="Mul node 'square'"):
        fa.lipschitz_bound(_graph([helper.make_node("Mul", ["x", "x"], ["y"], name="square")]), input_shape=(4,))
    with pytest.raises(E.UnsupportedOnnxOpError, match="Exp node 'e'.*input_domain"):
        fa.lipschitz_bound(_graph([helper.make_node("Exp", ["x"], ["y"], name="e")]), input_shape=(4,))
    with pytest.raises(E.UnsupportedOnnxOpError, match="'Hardmax'"):
        fa.lipschitz_bound(_graph([helper.make_node("Hardmax", ["x"], ["y"], name="h")]), input_shape=(4,))


def test_matmul_and_residual_compose_exactly_on_a_linear_graph():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 4))
    m = _graph([helper.make_node("MatMul", ["x", "A"], ["h"]), helper.make_node("Add", ["x", "h"], ["y"])], [("A", A)])
    b = fa.lipschitz_bound(m, input_shape=(4,))
    assert b.lipschitz == pytest.approx(1 + np.linalg.norm(A.astype(np.float32), 2), rel=1e-6)
    assert b.lipschitz >= np.linalg.norm(np.eye(4) + A, 2) - 1e-6
    lb = [("op", layer["op"]) for layer in b.layers]
    assert lb == [("op", "MatMul"), ("op", "Add")]


@pytest.mark.parametrize("stride,pad", [(1, 1), (2, 1), (2, 0)])
def test_conv_transpose_rule_bounds_the_dense_operator_norm(stride, pad):
    torch.manual_seed(stride + pad)
    deconv = torch.nn.ConvTranspose2d(3, 4, 3, stride=stride, padding=pad, bias=False).double().eval()
    flat = torch.nn.Sequential(copy.deepcopy(deconv).float(), torch.nn.Flatten()).eval()
    b = fa.lipschitz_bound(fa.wrap(flat, input_shape=(3, 6, 6)))
    exact = dense_norm(deconv, (3, 6, 6))
    assert b.lipschitz >= exact * (1 - 1e-6), (b.lipschitz, exact)
    assert b.layers[0]["op"] == "ConvTranspose" and b.layers[0]["local"] == pytest.approx(b.lipschitz)


def test_standardisation_folds_into_the_next_linear_layer():
    rng = np.random.default_rng(3)
    s = rng.uniform(0.1, 2.0, 6).astype(np.float32)  # per-feature std
    W = rng.standard_normal((3, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Div", ["x", "s"], ["z"]),
        helper.make_node("Flatten", ["z"], ["f"]),
        helper.make_node("Gemm", ["f", "W"], ["y"], transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(s, "s"), numpy_helper.from_array(W, "W")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    exact = np.linalg.norm(W.astype(np.float64) / s.astype(np.float64)[None, :], 2)  # the map is W diag(1/s)
    assert fa.lipschitz_bound(m, input_shape=(6,)).lipschitz == pytest.approx(exact, rel=1e-6)
    assert exact < np.max(1 / s.astype(np.float64)) * np.linalg.norm(W.astype(np.float64), 2)
    # a second reader of the scaled tensor stops the fold (its own constant is needed there)
    nodes.append(helper.make_node("Add", ["y", "y2"], ["out"]))
    nodes.insert(2, helper.make_node("Gemm", ["z", "W"], ["y2"], transB=1))
    g2 = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(s, "s"), numpy_helper.from_array(W, "W")],
    )
    b2 = fa.lipschitz_bound(helper.make_model(g2, opset_imports=[helper.make_opsetid("", 17)]), input_shape=(6,))
    assert b2.lipschitz == pytest.approx(
        2 * np.max(1 / s.astype(np.float64)) * np.linalg.norm(W.astype(np.float64), 2), rel=1e-6
    )


def test_torch_standardised_mlp_bound_is_sound_and_folded():
    torch.manual_seed(0)
    std = torch.rand(1, 6, 6) * 1.9 + 0.1
    net = torch.nn.Sequential(
        Standardize(torch.rand(1, 6, 6), std),
        torch.nn.Flatten(),
        torch.nn.Linear(36, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 10),
    ).eval()
    b = fa.lipschitz_bound(fa.wrap(net, input_shape=(1, 6, 6)))
    W1, W2 = (net[k].weight.detach().double().numpy() for k in (2, 4))
    s = 1 / std.double().numpy().reshape(-1)
    assert b.lipschitz == pytest.approx(np.linalg.norm(W1 * s[None, :], 2) * np.linalg.norm(W2, 2), rel=1e-5)
    g = torch.Generator().manual_seed(2)
    points = [torch.rand(1, 6, 6, generator=g, dtype=torch.float64) * 4 - 2 for _ in range(20)]
    worst = _max_jacobian_norm(net, points, steps=10)
    assert worst <= b.lipschitz < s.max() * np.linalg.norm(W1, 2) * np.linalg.norm(W2, 2)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-pixel"])
def test_channel_standardisation_folds_into_the_conv(per_channel):
    torch.manual_seed(1)
    std = torch.rand(3, 1, 1) * 0.5 + 0.1 if per_channel else torch.rand(3, 8, 8) * 0.5 + 0.1
    net = torch.nn.Sequential(
        Standardize(torch.tensor(0.5), std),
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 64, 10),
    ).eval()
    b = fa.lipschitz_bound(fa.wrap(net, input_shape=(3, 8, 8)))
    W = net[1].weight.detach().double().numpy()
    W2 = np.linalg.norm(net[4].weight.detach().double().numpy(), 2)
    if per_channel:
        s = 1 / std.double().numpy().reshape(1, 3, 1, 1)
        first = conv_norm(W * s, (8, 8))
    else:  # a per-pixel scale is not a kernel rescaling: max |1/std| stays a separate factor
        first = float((1 / std.double()).max()) * conv_norm(W, (8, 8))
    assert b.lipschitz == pytest.approx(first * W2, rel=1e-5)
    front = copy.deepcopy(torch.nn.Sequential(net[0], net[1])).double()  # standardise + conv: affine
    assert first >= dense_norm(front, (3, 8, 8)) * (1 - 1e-9)
    assert b.lipschitz >= _max_jacobian_norm(net, [torch.rand(3, 8, 8, dtype=torch.float64) for _ in range(8)], steps=5)


@pytest.mark.parametrize("declared", [(1, 1, 100, 100), (1, 1, 2, 2), (1, 64)], ids=["larger", "smaller", "flat"])
def test_declared_intermediate_shapes_that_contradict_the_graph_are_not_used(declared):
    """A value_info entry claiming another size for the pool's input: the rule reads the
    inferred 8 × 8 (ONNX inference itself keeps the claim), so the bound is the true 1/8."""
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        value_info=[helper.make_tensor_value_info("r", TensorProto.FLOAT, list(declared))],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert fa.lipschitz_bound(model).lipschitz == pytest.approx(1 / 8, rel=1e-12)
