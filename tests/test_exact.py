"""exact / lanczos / power / spectrum against dense float64 references (closed forms)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.testing import dense_fisher
from fimaudit.testing import strategies as fst


def _reference(model, x):
    F = dense_fisher(model, x)
    evals, evecs = np.linalg.eigh(F)
    return F, evals[:, ::-1], evecs[:, :, ::-1]


def _close(a, b, rtol):
    if np.size(b) == 0:
        return True
    scale = np.maximum(np.abs(b), 1e-300)
    return np.all(np.abs(a - b) <= rtol * scale + 1e-14 * np.max(np.abs(b)))


model_and_x = st.one_of(fst.linear_models(), fst.mlp_models()).flatmap(lambda m: st.tuples(st.just(m), fst.inputs(m)))


@given(model_and_x)
def test_exact_matches_dense_reference(mx):
    model, x = mx
    _, evals, _ = _reference(model, x)
    r = fa.fisher_norm(model, x, method="exact")
    assert _close(r.value, evals[:, 0], 1e-10), (r.value, evals[:, 0])
    assert np.array_equal(r.lower, r.value) and np.array_equal(r.upper, r.value)
    assert np.all(r.queries == 1 + model.num_outputs)


@given(model_and_x)
def test_linear_model_closed_form(mx):
    """For z = Wx + b the reference needs no Jacobian code at all: F = Wᵀ M W."""
    model, x = mx
    if not isinstance(model, fa.testing.LinearModel):
        return
    M = fa.testing.dense_metric(model.forward(x), model.likelihood, model.sigma)
    F = np.einsum("ca,ncb,be->nae", model.W, M, model.W)
    expected = np.linalg.eigvalsh(F)[:, -1]
    assert _close(fa.fisher_norm(model, x).value, expected, 1e-10)


@given(model_and_x)
def test_direction_is_top_eigenvector(mx):
    model, x = mx
    F, evals, _ = _reference(model, x)
    r = fa.fisher_norm(model, x, method="exact", return_direction=True)
    v = r.direction.reshape(len(x), -1)
    top = evals[:, 0]
    live = top > 1e-12 * max(1.0, np.max(top))
    assert np.allclose(np.linalg.norm(v[live], axis=1), 1.0)
    rayleigh = np.einsum("na,nab,nb->n", v, F, v)
    assert _close(rayleigh[live], top[live], 1e-9)


@given(model_and_x, st.sampled_from([1e-4, 1e-8]))
def test_lanczos_below_exact_and_within_tol(mx, tol):
    model, x = mx
    exact = fa.fisher_norm(model, x, method="exact").value
    r = fa.fisher_norm(model, x, method="lanczos", tol=tol, return_direction=True)
    assert np.all(r.converged)
    slack = 1e-12 * np.max(exact)
    assert np.all(r.value <= exact + slack)  # a Ritz value is a Rayleigh quotient
    assert np.all(exact - r.value <= tol * exact + slack)
    assert np.all(r.upper >= exact - slack)  # θ + residual brackets λ_max
    assert np.all(r.queries == 1 + 2 * r.steps.max() + 1)


@given(model_and_x)
def test_power_iteration_bracket(mx):
    model, x = mx
    exact = fa.fisher_norm(model, x, method="exact").value
    r = fa.fisher_norm(model, x, method="power", tol=1e-6, max_steps=3000, on_nonconvergence="flag")
    slack = 1e-12 * np.max(exact)
    assert np.all(r.lower <= exact + slack)
    assert np.all(r.upper >= exact - slack)


@given(model_and_x, st.integers(1, 3))
def test_spectrum_exact_and_lanczos(mx, k):
    model, x = mx
    F, evals, _ = _reference(model, x)
    rank = model.num_outputs - (model.likelihood == "categorical")
    k = min(k, rank, x[0].size)
    s = fa.fisher_spectrum(model, x, k=k, method="exact", return_vectors=True)
    assert _close(s.values, evals[:, :k], 1e-9)
    V = s.vectors.reshape(len(x), k, -1)
    rayleigh = np.einsum("nka,nab,nkb->nk", V, F, V)
    live = evals[:, :k] > 1e-12 * max(1.0, evals.max())
    assert _close(rayleigh[live], evals[:, :k][live], 1e-8)
    sl = fa.fisher_spectrum(model, x, k=k, method="lanczos", tol=1e-10)
    assert np.all(np.abs(sl.values - evals[:, :k]) <= 1e-8 * evals[:, :1] + 1e-14)


def test_chunked_gram_equals_full():
    model = fa.testing.MLPModel.random([20, 16, 12], seed=3, scale=2.0)
    x = np.random.default_rng(1).standard_normal((5, 20))
    full = fa.fisher_norm(model, x, method="exact", return_direction=True)
    small = fa.fisher_norm(model, x, method="exact", return_direction=True, memory_limit=5 * 20 * 16 * 3)
    assert np.allclose(small.value, full.value, rtol=1e-12)
    assert np.allclose(np.abs(np.sum(small.direction * full.direction, axis=1)), 1.0)
    assert np.all(full.queries == 1 + 12)  # 1 forward + C vjps; the direction comes from W
    assert np.all(small.queries == 1 + 2 * 12 + 1)  # C vjps + C jvps + 1 vjp for the direction
    plan = fa.plan(model, x, method="exact", return_direction=True, memory_limit=5 * 20 * 16 * 3)
    assert plan.calls_per_input == 1 + 2 * 12 + 1
    # in batches of 1 the whole W of an input fits the same memory: C vjps, the direction free
    one = fa.fisher_norm(model, x, method="exact", return_direction=True, memory_limit=5 * 20 * 16 * 3, batch_size=1)
    assert np.all(one.queries == 1 + 12) and np.allclose(one.value, full.value, rtol=1e-12)
    plan = fa.plan(model, x, method="exact", return_direction=True, memory_limit=5 * 20 * 16 * 3, batch_size=1)
    assert plan.calls_per_input == 1 + 12 and plan.total_calls == 5 * 13


def test_batch_size_splits_give_same_values():
    model = fa.testing.MLPModel.random([8, 10, 6], seed=5)
    x = np.random.default_rng(2).standard_normal((7, 8))
    a = fa.fisher_norm(model, x)
    b = fa.fisher_norm(model, x, batch_size=3)
    assert np.allclose(a.value, b.value, rtol=1e-13)


@pytest.mark.parametrize("lik", ["categorical", "bernoulli", "gaussian"])
def test_auto_uses_lanczos_for_many_outputs(lik):
    model = fa.testing.MLPModel.random([6, 20, 200], seed=1, likelihood=lik)
    x = np.random.default_rng(0).standard_normal((3, 6))
    r = fa.fisher_norm(model, x)
    assert r.method == "lanczos"
    exact = fa.fisher_norm(model, x, method="exact").value
    assert np.all(np.abs(r.value - exact) <= 1e-4 * exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("share", [0.4, 0.9, 1.1, 3.0])
def test_white_box_exact_holds_j_and_w_within_memory_limit(dtype, share):
    """The Jacobian J (model dtype) and W = R J (float64) are held together only when both fit
    ``memory_limit``; otherwise J's rows come in chunks that fit. Peak traced memory stays
    within the limit plus the model's own arrays, whatever share of J + W the limit allows."""
    import tracemalloc

    n, C, d = 8, 10, 3000
    rng = np.random.default_rng(0)
    model = fa.testing.LinearModel(rng.standard_normal((C, d)).astype(dtype))
    x = rng.standard_normal((n, d)).astype(dtype)
    both = n * C * d * (np.dtype(dtype).itemsize + 8)
    limit = int(share * both)
    reference = fa.fisher_norm(model, x, method="exact")
    tracemalloc.start()
    try:
        r = fa.fisher_norm(model, x, method="exact", memory_limit=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.all(r.queries == (1 + C if share >= 1 else 1 + 2 * C))
    assert np.allclose(r.value, reference.value, rtol=1e-5 if dtype == np.float32 else 1e-12)
    own = model.W.nbytes + x.nbytes  # a copy of the weights or of the batch, at most
    assert peak <= limit + own, (peak, limit, own)
