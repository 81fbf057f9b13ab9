"""The certified conv norm, the LRN rule and the bounds of real ImageNet graphs, each
against an independent float64 answer: dense matrices of the operators (torch, float64),
autograd Jacobians, and secant slopes measured with onnxruntime."""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit.bounds import convnorm  # noqa: E402
from fimaudit.bounds.graph import Graph  # noqa: E402
from fimaudit.bounds.interval_rules import lrn_interval  # noqa: E402
from fimaudit.bounds.rules import lrn  # noqa: E402

F = torch.nn.functional
ROUND = 1e-9  # float64 rounding of the computed norms


def dense(f, shape):
    """The matrix of the linear map ``f`` on inputs of ``shape`` (without the batch)."""
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    with torch.no_grad():
        return f(basis).reshape(n, -1).T.numpy()


def norm2(M):
    return float(np.linalg.norm(M, 2))


@pytest.fixture(params=["dispatch", "certified"])
def method(request, monkeypatch):
    """The norm as dispatched (exact eigenvalues for these small layers), and with the
    Ritz-value and Cholesky certificate forced everywhere (the same for every generated case)."""
    if request.param == "certified":
        monkeypatch.setattr(convnorm, "EXACT_FLOPS", 0)
    return request.param


conv_cases = st.tuples(
    st.integers(1, 3),  # groups
    st.integers(1, 3),  # in channels per group
    st.integers(1, 3),  # out channels per group
    st.tuples(st.integers(1, 3), st.integers(1, 3)),  # kernel
    st.integers(1, 2),  # stride
    st.integers(1, 2),  # dilation
    st.integers(0, 3),  # padding
    st.tuples(st.integers(2, 7), st.integers(2, 7)),  # input size
    st.integers(0, 2**31 - 1),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=conv_cases)
def test_conv_norm_bounds_the_dense_operator_and_is_within_rtol_of_the_circular_norm(method, case):
    g, ci, co, k, stride, dil, pad, size, seed = case
    W = torch.from_numpy(np.random.default_rng(seed).standard_normal((g * co, ci, *k)))
    keff = [(kk - 1) * dil + 1 for kk in k]
    if any(s + 2 * pad < ke for s, ke in zip(size, keff)):
        return  # no output
    bound = convnorm.conv_norm(W.numpy(), size, [dil, dil], g)
    zero_padded = norm2(
        dense(lambda x: F.conv2d(x, W, stride=stride, padding=pad, dilation=dil, groups=g), (g * ci, *size))
    )
    assert bound >= zero_padded * (1 - ROUND)
    grid = [s + ke - 1 for s, ke in zip(size, keff)]  # the circular convolution on it: the norm bounded

    full = norm2(
        dense(
            lambda x: F.conv2d(F.pad(x, (keff[1] - 1, 0, keff[0] - 1, 0), mode="circular"), W, dilation=dil, groups=g),
            (g * ci, *grid),
        )
    )
    assert full * (1 - ROUND) <= bound <= (1 + convnorm.RTOL) * full * (1 + ROUND)


@settings(max_examples=20, deadline=None)
@given(
    ci=st.integers(1, 4),
    co=st.integers(1, 4),
    k=st.integers(1, 4),
    dil=st.integers(1, 3),
    n=st.integers(2, 9),
    seed=st.integers(0, 2**31 - 1),
)
def test_conv_norm_bounds_one_and_three_dimensional_convolutions(ci, co, k, dil, n, seed):
    rng = np.random.default_rng(seed)
    W1 = torch.from_numpy(rng.standard_normal((co, ci, k)))
    b1 = convnorm.conv_norm(W1.numpy(), (n,), [dil])
    assert b1 >= norm2(dense(lambda x: F.conv1d(x, W1, padding=k // 2 * dil, dilation=dil), (ci, n))) * (1 - ROUND)
    W3 = torch.from_numpy(rng.standard_normal((co, ci, 2, k, 1)))
    b3 = convnorm.conv_norm(W3.numpy(), (3, n, 2), [1, dil, 1])
    assert b3 >= norm2(
        dense(lambda x: F.conv3d(x, W3, padding=(1, (k - 1) * dil, 0), dilation=(1, dil, 1)), (ci, 3, n, 2))
    ) * (1 - ROUND)


def hermitian_batch(rng, B, d, kind):
    A = rng.standard_normal((B, d, d)) + 1j * rng.standard_normal((B, d, d))
    if kind == "rank one":
        A[:, :, 1:] = 0
    if kind == "near-degenerate top":  # two top eigenvalues 1 and 1 − 1e-6: power steps converge slowly
        Q, _ = np.linalg.qr(A)
        lam = np.concatenate([[1.0, 1 - 1e-6], rng.random(d - 2) * 0.9])
        return np.einsum("bij,j,bkj->bik", Q, lam, Q.conj())
    return A @ np.conj(np.swapaxes(A, 1, 2))


@pytest.mark.parametrize("kind", ["random", "rank one", "near-degenerate top"])
@pytest.mark.parametrize("scale", [1e-150, 1.0, 1e150])
def test_certificate_brackets_the_largest_eigenvalue_without_overflow(monkeypatch, kind, scale):
    monkeypatch.setattr(convnorm, "EXACT_FLOPS", 0)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        d = int(rng.integers(2, 40))
        G = hermitian_batch(rng, int(rng.integers(1, 30)), d, kind) * scale
        exact = float(np.max(np.linalg.eigvalsh(G / scale))) * scale
        up, low = convnorm.hermitian_max_eig(G)
        assert low * (1 - ROUND) <= exact <= up * (1 + ROUND)
        assert up <= (1 + convnorm.RTOL) * exact * (1 + ROUND)


def test_certificate_with_a_floor_still_bounds_what_is_above_it(monkeypatch):
    monkeypatch.setattr(convnorm, "EXACT_FLOPS", 0)
    rng = np.random.default_rng(3)
    G = hermitian_batch(rng, 50, 20, "random")
    lam = np.linalg.eigvalsh(G)[:, -1]
    for floor in (0.5 * lam.max(), 0.99 * lam.max(), 2 * lam.max()):
        up, low = convnorm.hermitian_max_eig(G, floor)
        assert up >= min(lam.max(), floor) * (1 - ROUND) and low >= floor * (1 - ROUND)


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(1, 30),
    B=st.integers(1, 6),
    complex_=st.booleans(),
    rel=st.sampled_from([1e-6, 1e-3, 0.1]),
    seed=st.integers(0, 2**31 - 1),
)
def test_cholesky_certificate_accepts_just_above_and_refuses_just_below_the_top_eigenvalue(d, B, complex_, rel, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((B, d, d)) + (1j * rng.standard_normal((B, d, d)) if complex_ else 0)
    G = A @ np.conj(np.swapaxes(A, 1, 2))
    lam = np.linalg.eigvalsh(G)[:, -1]
    assert np.all(convnorm.below(G, lam * (1 + rel)))
    assert not np.any(convnorm.below(G, lam * (1 - rel)))
    mixed = lam * np.where(np.arange(B) % 2 == 0, 1 + rel, 1 - rel)  # the halves are split where one fails
    np.testing.assert_array_equal(convnorm.below(G, mixed), np.arange(B) % 2 == 0)


@pytest.mark.parametrize("kind", ["random", "rank one", "near-degenerate top"])
def test_ritz_values_are_lower_bounds_close_to_the_top_eigenvalue(kind):
    worst = 1.0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        d = int(rng.integers(2, 80))
        G = hermitian_batch(rng, int(rng.integers(1, 8)), d, kind)
        lam = np.linalg.eigvalsh(G)[:, -1]
        low = convnorm.ritz_lower(lambda v: np.einsum("bij,bj->bi", G, v), len(G), d, G.dtype)
        assert np.all(low <= lam * (1 + ROUND))
        worst = min(worst, float(np.min(low / lam)))
    assert worst >= 1 - convnorm.RTOL  # close enough that the Cholesky test at (1 + RTOL) · low rarely fails


@pytest.mark.parametrize("shape", [(600, 300), (300, 700), (2, 400, 280)])
@pytest.mark.parametrize("rank_one", [False, True])
def test_spectral_norm_of_large_matrices_is_certified_within_rtol(shape, rank_one):
    from fimaudit.bounds.rules import spectral_norm

    rng = np.random.default_rng(len(shape) + rank_one)
    M = rng.standard_normal(shape)
    if rank_one:
        M = rng.standard_normal((*shape[:-1], 1)) * rng.standard_normal(shape[-1])
    exact = max(norm2(m) for m in M.reshape(-1, *shape[-2:]))
    got = spectral_norm(M)
    assert exact * (1 - ROUND) <= got <= exact * math.sqrt(1 + convnorm.RTOL) * (1 + ROUND)


@settings(max_examples=30, deadline=None)
@given(
    g=st.integers(1, 3),
    ci=st.integers(1, 4),
    co=st.integers(1, 4),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dil=st.integers(1, 2),
    seed=st.integers(0, 2**31 - 1),
)
def test_autocorrelation_is_the_sum_over_tap_pairs(g, ci, co, k, dil, seed):
    W = np.random.default_rng(seed).standard_normal((g * co, ci, *k))
    taps, _ = convnorm.layout(W, (5, 5), [dil, dil])
    lags, C = convnorm.autocorrelation(W, taps, g)
    Wg = W.reshape(g, co, ci, -1)
    if ci > co:
        Wg = np.swapaxes(Wg, 1, 2)
    want = np.zeros_like(C)
    for p in range(len(taps)):
        for q in range(len(taps)):
            r = int(np.flatnonzero(np.all(lags == taps[p] - taps[q], axis=1))[0])
            want[:, r] += np.einsum("goi,goj->gij", Wg[..., p], Wg[..., q])
    np.testing.assert_allclose(C, want, rtol=1e-12, atol=1e-12)


def test_conv_norm_of_a_wide_layer_uses_little_memory_and_matches_the_exact_norm():
    W = np.random.default_rng(0).standard_normal((96, 48, 3, 3))
    half, nbytes = convnorm.workspace(W.shape, (20, 20))
    assert half == (22, 12) and nbytes < 2 * convnorm.CHUNK_BYTES
    exact_top = 0.0
    for grid_row in range(22):  # exact per-frequency SVD on the (22, 22) grid, row by row
        K = np.fft.fft2(np.pad(W, ((0, 0), (0, 0), (0, 19), (0, 19))), axes=(2, 3))[:, :, grid_row]
        exact_top = max(exact_top, float(np.max(np.linalg.norm(np.moveaxis(K, 2, 0), 2, axis=(1, 2)))))
    bound = convnorm.conv_norm(W, (20, 20))
    assert exact_top * (1 - ROUND) <= bound <= exact_top * (1 + convnorm.RTOL)


def test_grouped_conv_transpose_is_bounded_as_the_adjoint_conv():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)  # (C_in, C_out / groups, k, k), 2 groups
    node = helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="up", group=2, strides=[2, 2], pads=[1, 1, 1, 1])
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 9, 9])],
        [numpy_helper.from_array(W, "W")],
    )
    b = fa.lipschitz_bound(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    Wt = torch.from_numpy(W.astype(np.float64))
    exact = norm2(dense(lambda x: F.conv_transpose2d(x, Wt, stride=2, padding=1, groups=2), (4, 5, 5)))
    assert exact * (1 - ROUND) <= b.lipschitz  # sound; the strides' subsampling is not used, so not tight
    assert b.lipschitz == pytest.approx(convnorm.conv_norm(W, (9, 9), None, 2))  # the adjoint Conv, same W


# LRN ------------------------------------------------------------------------------------------


def onnx_lrn(x, size, alpha, beta, bias):
    """LRN as the ONNX operator defines it (channel window [c − ⌊(n−1)/2⌋, c + ⌈(n−1)/2⌉]), in torch."""
    C = x.shape[1]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = x * x
    s = torch.stack([sq[:, max(0, c - lo) : min(C, c + hi + 1)].sum(1) for c in range(C)], 1)
    return x / (bias + alpha / size * s) ** beta


def lrn_model(C, size, alpha, beta, bias, H=3):
    node = helper.make_node("LRN", ["x"], ["y"], name="lrn", size=size, alpha=alpha, beta=beta, bias=bias)
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, C, H, H]) for v in "xy"]
    return helper.make_model(
        helper.make_graph([node], "g", io[:1], io[1:]), opset_imports=[helper.make_opsetid("", 17)]
    )


def test_the_reference_lrn_matches_onnxruntime():
    x = np.random.default_rng(0).standard_normal((1, 6, 3, 3)).astype(np.float32) * 30
    for size in (1, 3, 5, 7):  # onnxruntime implements odd sizes only
        sess = ort.InferenceSession(lrn_model(6, size, 0.01, 0.75, 2.0).SerializeToString())
        got = sess.run(None, {"x": x})[0]
        want = onnx_lrn(torch.from_numpy(x.astype(np.float64)), size, 0.01, 0.75, 2.0).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def jacobian_norm(x, size, alpha, beta, bias, graph=False):
    """‖J‖₂ of LRN at one position (1, C, 1, 1): the Jacobian is block diagonal over positions."""
    J = torch.autograd.functional.jacobian(
        lambda a: onnx_lrn(a, size, alpha, beta, bias).reshape(-1), x, create_graph=graph
    )
    return torch.linalg.matrix_norm(J.reshape(x.numel(), x.numel()), 2)


@settings(max_examples=15, deadline=None)
@given(
    C=st.integers(1, 7),
    size=st.integers(1, 7),
    alpha=st.floats(1e-4, 10.0),
    beta=st.floats(0.0, 2.0),
    bias=st.floats(0.05, 4.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_lrn_bound_holds_at_sampled_and_adversarial_points(C, size, alpha, beta, bias, seed):
    m = lrn_model(C, size, alpha, beta, bias)
    L = lrn(m.graph.node[0], C)
    assert L == pytest.approx(fa.lipschitz_bound(m).lipschitz)
    g = torch.Generator().manual_seed(seed)
    scale = math.sqrt(size * bias / max(alpha * max(beta, 1e-3), 1e-12))  # where u = (α/n) S ≈ k/β, the slope's peak
    best = 0.0
    for s in (0.1 * scale, 0.5 * scale, scale, 2 * scale, 10 * scale):
        for _ in range(4):
            x = s * torch.randn(1, C, 1, 1, generator=g, dtype=torch.float64) / math.sqrt(C)
            best = max(best, jacobian_norm(x, size, alpha, beta, bias).item())
    x = scale * torch.randn(1, C, 1, 1, generator=g, dtype=torch.float64) / math.sqrt(C)
    for _ in range(20):  # ascent on ‖J(x)‖₂
        x.requires_grad_(True)
        val = jacobian_norm(x, size, alpha, beta, bias, graph=True)
        (grad,) = torch.autograd.grad(val, x, allow_unused=True)
        best = max(best, val.item())
        if grad is None or not torch.isfinite(grad).all() or grad.norm() == 0:
            break
        x = (x + 0.05 * scale * grad / grad.norm()).detach()
    assert best <= L * (1 + ROUND)


def test_lrn_intervals_contain_every_sampled_output():
    rng = np.random.default_rng(0)
    m = lrn_model(5, 3, 0.5, 0.75, 1.0)
    node = m.graph.node[0]
    for _ in range(20):
        c = rng.standard_normal((1, 5, 3, 3)) * 3
        r = rng.random((1, 5, 3, 3)) * 2
        lo, hi = lrn_interval((c - r, c + r), node)
        x = c - r + 2 * r * rng.random((200, 5, 3, 3))
        y = onnx_lrn(torch.from_numpy(x), 3, 0.5, 0.75, 1.0).numpy()
        assert np.all(y >= lo - 1e-12) and np.all(y <= hi + 1e-12)


def test_lrn_with_a_domain_and_bad_parameters():
    m = lrn_model(4, 3, 0.1, 0.75, 1.0)
    assert fa.lipschitz_bound(m, input_domain=(-1.0, 1.0)).lipschitz == pytest.approx(lrn(m.graph.node[0], 4))
    with pytest.raises(fa.errors.UnsupportedOnnxOpError, match="LRN node 'lrn'.*bias > 0"):
        fa.lipschitz_bound(lrn_model(4, 3, 0.1, 0.75, 0.0))


# real graphs ------------------------------------------------------------------------------------

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def secant_slopes(path, logits, pairs, seed=0):
    m = onnx.load(path)
    m.graph.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(pairs):
        x = rng.random((1, 3, 224, 224))
        d = rng.standard_normal(x.shape)
        d *= 1e-2 * np.linalg.norm(x) / np.linalg.norm(d)
        za, zb = (sess.run([logits], {name: v.astype(np.float32)})[0].astype(np.float64) for v in (x, x + d))
        out.append(np.linalg.norm(zb - za) / np.linalg.norm(d))
    return out


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1", "shufflenet"])
def test_real_imagenet_graphs_get_a_finite_bound_above_measured_secants(name):
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    if not os.path.exists(path):
        pytest.skip(f"this onnx ships no {path}")
    b = fa.lipschitz_bound(path)
    assert np.isfinite(b.lipschitz) and b.softmax_skipped
    slopes = secant_slopes(path, Graph(onnx.load(path)).output, pairs=3)
    assert max(slopes) <= b.lipschitz * (1 + 1e-4)  # float32 logits: the slopes carry rounding
