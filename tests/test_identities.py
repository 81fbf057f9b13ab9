"""Identities the Fisher must satisfy, each against an independent computation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.testing import MLPModel, ScaledInputModel, ShiftedModel, jacobian
from fimaudit.testing import strategies as fst


@given(
    fst.mlp_models(likelihood="categorical").flatmap(lambda m: st.tuples(st.just(m), fst.inputs(m))),
    st.floats(-1e3, 1e3),
    st.integers(0, 2**31),
)
def test_shifting_all_logits_by_a_per_input_affine_term_leaves_F_unchanged(mx, c, seed):
    model, x = mx
    a = np.random.default_rng(seed).standard_normal(x[0].size) * 3.0
    base = fa.fisher_norm(model, x).value
    shifted = fa.fisher_norm(ShiftedModel(model, a, c), x).value
    assert np.allclose(shifted, base, rtol=1e-8, atol=1e-14 * max(1.0, base.max()))


@given(fst.mlp_models().flatmap(lambda m: st.tuples(st.just(m), fst.inputs(m))), st.floats(0.01, 100.0))
def test_scaling_the_input_scales_lambda_by_inverse_square(mx, a):
    model, x = mx
    base = fa.fisher_norm(model, x).value
    scaled = fa.fisher_norm(ScaledInputModel(model, a), a * x).value
    assert np.allclose(scaled * a**2, base, rtol=1e-9, atol=1e-14 * max(1.0, base.max()))


def _scores(model, x, rng, N):
    """N samples of ∇ₓ log p(y|x) per input, y ~ p(·|x), from the hand-written Jacobian."""
    J = jacobian(model, x)  # (n, C, d)
    z = model.forward(x)
    if model.likelihood == "categorical":
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        r = np.stack([np.eye(p.shape[1])[rng.choice(p.shape[1], N, p=pi)] - pi for pi in p])
    elif model.likelihood == "bernoulli":
        s = 1 / (1 + np.exp(-z))
        r = (rng.random((len(x), N, z.shape[1])) < s[:, None]).astype(float) - s[:, None]
    else:
        r = rng.standard_normal((len(x), N, z.shape[1])) * model.sigma / model.sigma**2
    return np.einsum("nkc,ncd->nkd", r, J)


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli", "gaussian"])
def test_fisher_is_the_covariance_of_the_score(likelihood):
    """F = Cov_y[∇ₓ log p(y|x)], checked by sampling y: the trace and the Rayleigh
    quotient along the top direction agree with the sample moments within 5 standard errors."""
    model = MLPModel.random([6, 12, 5], seed=7, scale=2.0, likelihood=likelihood, sigma=0.7)
    x = np.random.default_rng(3).standard_normal((4, 6))
    rng = np.random.default_rng(11)
    N = 200_000
    g = _scores(model, x, rng, N)
    assert np.all(np.abs(g.mean(1)) <= 5 * g.std(1) / np.sqrt(N) + 1e-12)  # the score has mean zero

    tr = fa.fisher_trace(model, x, method="exact").value
    sq = np.sum(g**2, axis=2)
    assert np.all(np.abs(sq.mean(1) - tr) <= 5 * sq.std(1) / np.sqrt(N))

    r = fa.fisher_norm(model, x, return_direction=True)
    proj = np.einsum("nkd,nd->nk", g, r.direction) ** 2
    assert np.all(np.abs(proj.mean(1) - r.value) <= 5 * proj.std(1) / np.sqrt(N))


def test_saturated_logits_are_finite_and_exact():
    """Logits at ±1e4: a one-hot softmax has F = 0; a two-way tie has F = ¼ (w₁ − w₂)(w₁ − w₂)ᵀ."""
    rng = np.random.default_rng(0)
    d = 7
    W = rng.standard_normal((4, d))
    x = np.zeros((2, d))
    b_onehot = np.array([1e4, -1e4, -1e4, -1e4])
    b_tie = np.array([1e4, 1e4, -1e4, -1e4])
    for b, expected in [(b_onehot, 0.0), (b_tie, 0.25 * np.sum((W[0] - W[1]) ** 2))]:
        m = fa.testing.LinearModel(W, b)
        for method in ["exact", "lanczos", "power"]:
            r = fa.fisher_norm(m, x, method=method, return_direction=True)
            assert np.all(np.isfinite(r.value)) and np.all(np.isfinite(r.direction))
            assert np.allclose(r.value, expected, rtol=1e-4 if method == "power" else 1e-12, atol=1e-300)
        t = fa.fisher_trace(m, x)
        assert np.allclose(t.value, expected, rtol=1e-12, atol=1e-300)


def test_nearly_saturated_keeps_relative_accuracy():
    """p_max = 1 − O(1e-30): the top-class component of M is formed without 1 − p."""
    W = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    x = np.array([[70.0, 0.0]])
    m = fa.testing.LinearModel(W, np.zeros(3))
    F = fa.testing.dense_fisher(m, x)
    expected = np.linalg.eigvalsh(F)[:, -1]
    assert 0 < expected[0] < 1e-14
    assert np.allclose(fa.fisher_norm(m, x).value, expected, rtol=1e-9)
    assert np.allclose(fa.fisher_norm(m, x, method="lanczos", tol=1e-10).value, expected, rtol=1e-9)
