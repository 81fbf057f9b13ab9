"""NaN and inf never reach a bound: every refusal is a NonFiniteBoundError naming the node
and its op, never a raw numpy LinAlgError or a NaN/inf "bound"; and graphs whose reshape
targets are computed from Shape nodes (legacy torch export) get their real shapes."""

import io
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit import errors as E  # noqa: E402
from fimaudit.bounds.finite import guarded  # noqa: E402
from fimaudit.bounds.graph import Graph  # noqa: E402
from fimaudit.bounds.rules import spectral_norm  # noqa: E402

RNG = np.random.default_rng(0)


def graph(nodes, inits, dtype=TensorProto.DOUBLE, features=4, out=3):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", dtype, ["N", features])],
        [helper.make_tensor_value_info(nodes[-1].output[0], dtype, ["N", out])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


W = RNG.standard_normal((4, 3))


def head(inp="h"):
    return helper.make_node("MatMul", [inp, "W"], ["y"], name="head")


DOMAINS = pytest.mark.parametrize("domain", [None, (-1.0, 1.0)], ids=["global", "on-a-box"])


@DOMAINS
def test_division_by_a_zero_constant_is_refused_naming_the_node(domain):
    m = graph(
        [helper.make_node("Div", ["x", "d"], ["h"], name="scale"), head()], {"d": np.array([1.0, 0.0, 2, 3]), "W": W}
    )
    with pytest.raises(E.NonFiniteBoundError, match=r"Div node 'scale' divides by the constant 'd', which is 0"):
        fa.lipschitz_bound(m, input_domain=domain)


@DOMAINS
def test_a_constant_folded_to_inf_is_refused_naming_where_it_came_from(domain):
    nodes = [
        helper.make_node("Div", ["one", "zero"], ["c"], name="fold_me"),  # 1 / 0 = inf, folded
        helper.make_node("Mul", ["x", "c"], ["h"], name="apply"),
        head(),
    ]
    m = graph(nodes, {"one": np.ones(4), "zero": np.zeros(4), "W": W})
    with pytest.raises(E.NonFiniteBoundError, match=r"Mul node 'apply' reads the constant 'c'.*Div node 'fold_me'"):
        fa.lipschitz_bound(m, input_domain=domain)


@DOMAINS
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["weight", "bias", "factor"])
def test_non_finite_initializers_are_refused_naming_the_node(domain, bad, where):
    b = np.zeros(3)
    w = W.copy()
    f = np.ones(4)
    {"weight": w, "bias": b, "factor": f}[where][1] = bad
    nodes = [
        helper.make_node("Mul", ["x", "f"], ["h"], name="factor"),
        helper.make_node("MatMul", ["h", "W"], ["z"], name="weight"),
        helper.make_node("Add", ["z", "b"], ["y"], name="bias"),
    ]
    m = graph(nodes, {"f": f, "W": w, "b": b})
    op = {"weight": "MatMul", "bias": "Add", "factor": "Mul"}[where]
    with pytest.raises(E.NonFiniteBoundError, match=rf"{op} node '{where}' reads the constant .*initializer"):
        fa.lipschitz_bound(m, input_domain=domain)


def test_an_overflowing_cumulative_constant_is_refused():
    big = np.full(4, 1e200)
    nodes = [
        helper.make_node("Mul", ["x", "big"], ["a"], name="first"),
        helper.make_node("Mul", ["a", "big"], ["r"], name="second"),  # L = 1e400 = inf
        helper.make_node("Relu", ["r"], ["h"]),
        head(),
    ]
    with pytest.raises(E.NonFiniteBoundError, match=r"Mul node 'second': its cumulative Lipschitz constant"):
        fa.lipschitz_bound(graph(nodes, {"big": big, "W": W}))


def test_an_overflowing_interval_is_refused():
    shift = np.full(4, 1e308)
    nodes = [
        helper.make_node("Add", ["x", "s"], ["a"], name="first"),
        helper.make_node("Add", ["a", "s"], ["h"], name="second"),  # 2e308 = inf, while L stays 1
        head(),
    ]
    m = graph(nodes, {"s": shift, "W": W})
    assert fa.lipschitz_bound(m).lipschitz == pytest.approx(np.linalg.norm(W, 2))  # no box: L only
    with pytest.raises(E.NonFiniteBoundError, match=r"Add node 'second': its interval's"):
        fa.lipschitz_bound(m, input_domain=(0.0, 1.0))


def test_a_failing_svd_is_refused_naming_the_node():
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    M = np.full((5, 5), np.nan)
    try:
        np.linalg.svd(M)
    except np.linalg.LinAlgError:
        pass
    else:
        pytest.skip("this numpy's SVD returns NaN instead of failing")
    with pytest.raises(E.NonFiniteBoundError, match=r"MatMul node 'mm': SVD did not converge"):
        with guarded(node):
            spectral_norm(M)


OPS = ["mul", "add", "matmul", "relu", "div"]


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=5),
    where=st.integers(0, 10),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    domain=st.booleans(),
)
def test_any_non_finite_constant_on_the_path_is_refused_by_name(ops, where, bad, domain):
    """A chain of random layers with one constant poisoned: always NonFiniteBoundError naming
    the poisoned node, never a finite bound or another exception."""
    rng = np.random.default_rng(len(ops) * 11 + where)
    nodes, inits, t, idx = [], {}, "x", [k for k, op in enumerate(ops) if op != "relu"]
    target = idx[where % len(idx)] if idx else None
    for k, op in enumerate(ops):
        name, c, out = f"n{k}", f"c{k}", f"t{k}"
        if op == "relu":
            nodes.append(helper.make_node("Relu", [t], [out], name=name))
        else:
            value = rng.standard_normal((4, 4)) if op == "matmul" else rng.uniform(0.5, 2.0, 4)
            if k == target:
                value.flat[rng.integers(value.size)] = bad
            inits[c] = value
            onnx_op = {"mul": "Mul", "add": "Add", "matmul": "MatMul", "div": "Div"}[op]
            nodes.append(helper.make_node(onnx_op, [t, c], [out], name=name))
        t = out
    inits["W"] = W
    nodes.append(head(t))
    m = graph(nodes, inits)
    kw = {"input_domain": (-1.0, 1.0)} if domain else {}
    if target is None:
        assert math.isfinite(fa.lipschitz_bound(m, **kw).lipschitz)
        return
    with pytest.raises(E.NonFiniteBoundError, match=rf"node 'n{target}'"):
        fa.lipschitz_bound(m, **kw)


def test_fisher_bound_at_refuses_non_finite_logits():
    b = fa.lipschitz_bound(graph([head("x")], {"W": W}))
    with pytest.raises(E.NonFiniteOutputError, match=r"rows \[1\]") as err:
        b.fisher_bound_at(np.array([[0.0, 1.0, 2.0], [np.nan, 0.0, 0.0]]))
    assert err.value.indices == [1]


# a legacy-exported Transformer -------------------------------------------------------------------------


def test_a_reshape_target_computed_through_div_and_cast_is_resolved():
    """x (N, 8) → reshape to (N, 2, 8 // 2) with the target computed as Shape → Gather → Div
    → Cast (which data propagation does not follow) → scale by 1/√(last dimension) read off
    that reshape's Shape → flatten → W. The scale is 1/√4, so L = ‖W‖₂ / 2 exactly."""
    W8 = RNG.standard_normal((8, 3))
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["d"], axis=0),
        helper.make_node("Div", ["d", "two"], ["half"]),
        helper.make_node("Cast", ["half"], ["halfc"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["halfc", "zero"], ["halfu"]),
        helper.make_node("Concat", ["lead", "halfu"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Shape", ["r"], ["rs"]),
        helper.make_node("Gather", ["rs", "last"], ["k"], axis=0),
        helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.DOUBLE),
        helper.make_node("Sqrt", ["kf"], ["root"]),
        helper.make_node("Div", ["unit", "root"], ["scale"]),
        helper.make_node("Mul", ["r", "scale"], ["scaled"], name="scale"),
        helper.make_node("Flatten", ["scaled"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        head("hr"),
    ]
    inits = {
        "one": np.array(1, np.int64),
        "two": np.array(2, np.int64),
        "zero": np.array([0], np.int64),
        "last": np.array(-1, np.int64),
        "lead": np.array([1, 2], np.int64),
        "unit": np.array(1.0),
        "W": W8,
    }
    m = graph(nodes, inits, features=8)
    g = Graph(m)
    assert g.known_shape("r") == (1, 2, 4) and float(g.const("scale")) == 0.5
    assert fa.lipschitz_bound(m).lipschitz == pytest.approx(np.linalg.norm(W8, 2) / 2, rel=1e-12)


def _legacy_vit(dynamic):
    torch = pytest.importorskip("torch")
    from fimaudit_torch.testing import SmallViT

    torch.manual_seed(0)
    net = SmallViT(image=16, patch=4, depth=1).eval()
    buf = io.BytesIO()
    kw = {"input_names": ["x"], "dynamic_axes": {"x": {0: "N"}}} if dynamic else {"input_names": ["x"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, 16, 16), buf, dynamo=False, **kw)
    return onnx.load_from_string(buf.getvalue())


def test_legacy_exported_vit_with_a_symbolic_batch_gets_its_real_shapes():
    """The legacy exporter computes attention's reshape targets from Shape → Div → Cast,
    which shape inference does not follow: those shapes are resolved by folding, so the
    head-dimension scale 1/√d is finite and the bound equals the fixed-batch export's."""
    dynamic, fixed = _legacy_vit(True), _legacy_vit(False)
    g = Graph(dynamic, None)
    shapes = [g.known_shape(n.input[0]) for n in g.nodes if n.op_type == "Shape"]
    assert shapes and all(s is not None for s in shapes)
    assert not g.nonfinite
    a = fa.lipschitz_bound(dynamic, input_domain=(0.0, 1.0))
    b = fa.lipschitz_bound(fixed, input_domain=(0.0, 1.0))
    assert math.isfinite(a.lipschitz) and a.lipschitz == pytest.approx(b.lipschitz, rel=1e-9)
    assert all(math.isfinite(layer["cumulative"]) for layer in a.layers)
