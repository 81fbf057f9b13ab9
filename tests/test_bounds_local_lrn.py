"""The local LRN rule against independent answers: onnxruntime for values, a
float64 torch transcription of the ONNX definition (autograd Jacobians) for every Jacobian
inside the box, and sampling plus projected ascent for the bound on sup ‖J‖₂."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import fimaudit as fa
from fimaudit.bounds.graph import Graph
from fimaudit.bounds.local.engine import Network, Pass

C_IN, C, H, W, OUT = 2, 6, 2, 2, 3


def lrn_graph(seed, size, alpha, beta, bias):
    """x (1, 2, 2, 2) → 1×1 Conv to 6 channels → LRN → ReLU → Flatten → Gemm → 3 logits."""
    alpha, beta, bias = (float(np.float32(v)) for v in (alpha, beta, bias))  # as the graph stores them
    rng = np.random.default_rng(seed)
    wc = rng.normal(size=(C, C_IN, 1, 1)).astype(np.float32)
    bc = rng.normal(size=C).astype(np.float32)
    wg = rng.normal(size=(OUT, C * H * W)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["u"]),
        helper.make_node("LRN", ["u"], ["v"], size=size, alpha=alpha, beta=beta, bias=bias),
        helper.make_node("Relu", ["v"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "wg"], ["z"], transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((wc, "wc"), (bc, "bc"), (wg, "wg"))]
    graph = helper.make_graph(
        nodes,
        "lrn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C_IN, H, W])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, OUT])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])

    def f(x):  # the ONNX definition, one channel window at a time, in float64
        t = lambda a: torch.as_tensor(a.astype(np.float64))  # noqa: E731
        u = torch.einsum("oi,ihw->ohw", t(wc[:, :, 0, 0]), x) + t(bc)[:, None, None]
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        v = torch.stack(
            [u[c] / (bias + alpha / size * (u[max(0, c - lo) : c + hi + 1] ** 2).sum(0)) ** beta for c in range(C)]
        )
        return t(wg) @ torch.relu(v).reshape(-1)

    return model, f


def jac(f, x):
    return torch.autograd.functional.jacobian(f, torch.as_tensor(x, dtype=torch.float64)).reshape(OUT, -1).numpy()


def sampled_max(f, x, rho, rng, n=100, steps=20):
    """max ‖J‖₂ over random points and vertices of the box, then projected ascent from the best."""
    pts = [x] + [x + rho * rng.uniform(-1, 1, x.shape) for _ in range(n // 2)]
    pts += [x + rho * np.sign(rng.normal(size=x.shape)) for _ in range(n // 2)]
    norms = [np.linalg.norm(jac(f, p), 2) for p in pts]
    y = torch.as_tensor(pts[int(np.argmax(norms))], dtype=torch.float64)
    for _ in range(steps):
        y.requires_grad_(True)
        J = torch.autograd.functional.jacobian(f, y, create_graph=True).reshape(OUT, -1)
        (g,) = torch.autograd.grad(torch.linalg.matrix_norm(J, 2), y)
        y = torch.clamp(y.detach() + 0.25 * rho * g.sign(), torch.as_tensor(x - rho), torch.as_tensor(x + rho))
        norms.append(np.linalg.norm(jac(f, y.numpy()), 2))
    return max(norms)


CASES = [(0, 3, 0.5, 0.75, 1.0), (1, 5, 2.0, 0.75, 2.0), (2, 2, 1.0, 1.5, 0.5), (3, 4, 0.1, 0.5, 1.0)]


@pytest.mark.parametrize("seed, size, alpha, beta, bias", CASES)
def test_values_match_onnxruntime_and_sampled_outputs_lie_in_the_intervals(seed, size, alpha, beta, bias):
    ort = pytest.importorskip("onnxruntime")
    model, f = lrn_graph(seed, size, alpha, beta, bias)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, C_IN, H, W))
    rho = 0.4
    p = Pass(Network(Graph(model, (C_IN, H, W))), x, x - rho, x + rho)
    if size % 2:  # onnxruntime runs odd windows only; even ones are checked against the transcription
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        ref = sess.run(None, {"x": x.astype(np.float32)})[0]
        np.testing.assert_allclose(p.point["z"].reshape(-1), ref.reshape(-1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(p.point["z"].reshape(-1), f(torch.as_tensor(x[0])).numpy(), rtol=1e-9, atol=1e-9)
    for _ in range(200):
        y = f(torch.as_tensor(x[0] + rho * rng.uniform(-1, 1, x.shape[1:]))).numpy()
        assert np.all(p.lo["z"].reshape(-1) <= y + 1e-12) and np.all(y <= p.hi["z"].reshape(-1) + 1e-12)


@pytest.mark.parametrize("seed, size, alpha, beta, bias", CASES)
@pytest.mark.parametrize("generators", [0, 64])
def test_every_jacobian_in_the_box_lies_in_the_interval_jacobian(seed, size, alpha, beta, bias, generators):
    model, f = lrn_graph(seed, size, alpha, beta, bias)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, C_IN, H, W))
    rho = 0.3
    p = Pass(Network(Graph(model, (C_IN, H, W))), x, x - rho, x + rho)
    Jm, Jr = p.backward("z", np.eye(OUT), generators)
    assert np.all(Jr > 0)  # the rule is exercised: the Jacobian is not constant on this box
    for _ in range(300):
        J = jac(f, x[0] + rho * rng.uniform(-1, 1, x.shape[1:]))
        assert np.all(np.abs(J - Jm) <= Jr + 1e-12), np.max(np.abs(J - Jm) - Jr)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(1, 7),
    alpha=st.floats(0.01, 4.0),
    beta=st.floats(0.1, 2.0),
    bias=st.floats(0.3, 3.0),
    log_rho=st.floats(-3, 0),
)
def test_the_local_bound_is_never_below_sampling_and_ascent(seed, size, alpha, beta, bias, log_rho):
    model, f = lrn_graph(seed, size, alpha, beta, bias)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, C_IN, H, W))
    rho = 10.0**log_rho
    lb = fa.local_bound(model, x, rho, global_cap=False)
    found = sampled_max(f, x[0], rho, rng, n=40, steps=8)
    assert lb.lipschitz[0] >= found * (1 - 1e-9), (lb.lipschitz[0], found)


@pytest.mark.parametrize("seed, size, alpha, beta, bias", CASES)
def test_a_tiny_box_gives_the_exact_jacobian_norm(seed, size, alpha, beta, bias):
    model, f = lrn_graph(seed, size, alpha, beta, bias)
    x = np.random.default_rng(seed).normal(size=(1, C_IN, H, W))
    exact = np.linalg.norm(jac(f, x[0]), 2)
    lb = fa.local_bound(model, x, 1e-7, global_cap=False)
    assert exact <= lb.lipschitz[0] <= exact * (1 + 1e-4)
