"""Bounds on a declared input domain (LayerNorm, attention, products of activations), tested
against independent answers: a convex program for the least variance on a box, closed forms
for simple products, every intermediate tensor of a real model evaluated at sampled points
(intervals), and exact ‖J(x)‖₂ at sampled and ascent points inside the box (Lipschitz)."""

import numpy as np
import pytest
from scipy.optimize import minimize

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("fimaudit_torch")
from fimaudit_torch.testing import SmallViT, worst_jacobian_norm_in_box  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit import errors as E  # noqa: E402
from fimaudit.bounds.interval_rules import min_variance  # noqa: E402
from fimaudit.bounds.intervals import propagate  # noqa: E402
from fimaudit.bounds.lipschitz import Graph  # noqa: E402


@pytest.mark.parametrize("seed", range(12))
def test_min_variance_is_the_minimum_over_the_box(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 9))
    c = rng.standard_normal((3, m)) * rng.choice([0.1, 1.0, 3.0])
    r = rng.uniform(0, 1.5, size=(3, m)) * rng.choice([0.0, 0.2, 1.0])
    lo, hi = c - r, c + r
    got = min_variance(lo, hi)
    for k in range(3):  # a convex QP solved independently, from several starts
        best = min(
            minimize(
                lambda x: np.var(x),
                x0,
                bounds=list(zip(lo[k], hi[k])),
                method="L-BFGS-B",
                options=dict(ftol=1e-15, gtol=1e-12),
            ).fun
            for x0 in (c[k], lo[k], hi[k])
        )
        assert got[k] <= best + 1e-12
        assert got[k] >= best - 1e-6 * max(1.0, best)
        pts = rng.uniform(lo[k], hi[k], size=(200, m))
        assert np.all(got[k] <= pts.var(axis=1) + 1e-12)


def _model(nodes):
    """x (1, 4) → y (1, 4) through ``nodes``."""
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_products_have_their_closed_forms():
    sq = _model([helper.make_node("Mul", ["x", "x"], ["y"], name="square")])
    with pytest.raises(E.UnsupportedOnnxOpError, match="Mul node 'square'.*input_domain"):
        fa.lipschitz_bound(sq)
    # x ↦ x ⊙ x on [−1, 2]^4: the Jacobian is diag(2x), so L = 2 · max|x| = 4 exactly
    assert fa.lipschitz_bound(sq, input_domain=(-1.0, 2.0)).lipschitz == pytest.approx(4.0)
    ex = _model([helper.make_node("Exp", ["x"], ["y"], name="e")])
    with pytest.raises(E.UnsupportedOnnxOpError, match="Exp node 'e'.*input_domain"):
        fa.lipschitz_bound(ex)
    assert fa.lipschitz_bound(ex, input_domain=(0.0, 1.0)).lipschitz == pytest.approx(np.e)
    # u ⊙ v with v broadcast along the features: x (1,4) times its own mean (1,1)
    mean = _model(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], keepdims=1, axes=[1]),
            helper.make_node("Mul", ["x", "m"], ["y"], name="scale"),
        ]
    )
    b = fa.lipschitz_bound(mean, input_domain=(0.5, 1.0)).lipschitz
    rng = np.random.default_rng(0)
    worst = 0.0
    for x in rng.uniform(0.5, 1.0, size=(300, 4)):  # J = m I + x 1ᵀ / 4
        worst = max(worst, np.linalg.norm(x.mean() * np.eye(4) + np.outer(x, np.ones(4)) / 4, 2))
    assert worst <= b <= 4 * worst
    with pytest.raises(E.UnsupportedOnnxOpError, match="contains 0"):
        fa.lipschitz_bound(_model([helper.make_node("Div", ["x", "x"], ["y"], name="q")]), input_domain=(-1.0, 1.0))
    with pytest.raises(E.InvalidArgumentError, match="low ≤ high"):
        fa.lipschitz_bound(sq, input_domain=(1.0, 0.0))
    with pytest.raises(E.InvalidArgumentError, match="pair"):
        fa.lipschitz_bound(sq, input_domain=1.0)


def _vit(depth=1, seed=0):
    torch.manual_seed(seed)
    net = SmallViT(image=32, patch=8, depth=depth).eval()
    return net, fa.wrap(net, input_shape=(3, 32, 32))


def _intermediates(proto, x):
    """Every tensor of the graph at input x (ONNX reference evaluation, float32)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    known = {o.name for o in model.graph.output}
    for n in model.graph.node:
        for o in n.output:
            if o and o not in known:
                model.graph.output.append(helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None))
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})))


def test_intervals_contain_every_tensor_at_sampled_points():
    _, m = _vit()
    proto = m.to_onnx()
    proto = onnx.load_from_string(proto) if isinstance(proto, bytes) else proto
    g = Graph(proto, (3, 32, 32))
    rng = np.random.default_rng(1)
    x0 = rng.uniform(0, 1, size=(1, 3, 32, 32))
    for r in (None, 0.02, 0.001):
        lo, hi = (0.0, 1.0) if r is None else (np.clip(x0 - r, 0, 1)[0], np.clip(x0 + r, 0, 1)[0])
        # plain interval arithmetic, and the intervals the bound itself used (tightened by the
        # mean-value boxes and the LayerNorm variance floors)
        used = fa.lipschitz_bound(proto, input_shape=(3, 32, 32), input_domain=(lo, hi)).intervals
        plain = propagate(g, lo, hi)
        lo_b, hi_b = np.broadcast_to(lo, x0.shape), np.broadcast_to(hi, x0.shape)
        points = [rng.uniform(lo_b, hi_b) for _ in range(3)] + [np.where(rng.random(x0.shape) < 0.5, lo_b, hi_b)]
        checked = 0
        for x in points:
            vals = _intermediates(proto, x.astype(np.float32))
            for box in (plain, used):
                for name, (a, b) in box.items():
                    if name in vals and np.asarray(vals[name]).dtype.kind == "f" and np.shape(vals[name]) == a.shape:
                        v = np.asarray(vals[name], dtype=np.float64)
                        slack = 1e-4 * (1 + np.abs(v))  # the model runs in float32
                        assert np.all(v >= a - slack) and np.all(v <= b + slack), name
                        checked += 1
        assert checked > 80


@pytest.mark.parametrize("radius", [None, 0.01], ids=["unit-box", "local-box"])
def test_vit_bound_holds_inside_the_domain(radius):
    net, m = _vit()
    proto = m.to_onnx()  # exported once, bounded twice
    rng = np.random.default_rng(2)
    x0 = rng.uniform(0, 1, size=(3, 32, 32))
    lo, hi = (
        (np.zeros_like(x0), np.ones_like(x0))
        if radius is None
        else (np.clip(x0 - radius, 0, 1), np.clip(x0 + radius, 0, 1))
    )
    b = fa.lipschitz_bound(proto, input_shape=(3, 32, 32), input_domain=(lo, hi))
    assert b.input_domain is not None and np.isfinite(b.lipschitz)
    worst = worst_jacobian_norm_in_box(net, lo, hi, starts=3)
    assert b.lipschitz >= worst, (b.lipschitz, worst)
    if radius is not None:  # a smaller box gives a smaller (still sound) bound
        assert b.lipschitz < fa.lipschitz_bound(proto, input_shape=(3, 32, 32), input_domain=(0.0, 1.0)).lipschitz


def test_attention_without_a_domain_says_how_to_fix_it():
    _, m = _vit()
    with pytest.raises(E.UnsupportedOnnxOpError, match=r"input_domain=\(low, high\)"):
        fa.lipschitz_bound(m)
    with pytest.raises(E.InvalidArgumentError, match="input's shape"):
        fa.lipschitz_bound(m, input_domain=(np.zeros(5), np.ones(5)))
