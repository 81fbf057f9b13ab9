"""Trace estimators over many seeds: unbiasedness, coverage, and their rates in k."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.testing import dense_fisher
from fimaudit.testing import strategies as fst

SEEDS = range(100)


def _spectral_model(p, C=90, seed=0):
    """Gaussian linear model whose F has eigenvalues i^(−p), i = 1..C (closed form)."""
    lam = np.arange(1, C + 1, dtype=float) ** (-p)
    rng = np.random.default_rng(seed)
    q1, _ = np.linalg.qr(rng.standard_normal((C, C)))
    q2, _ = np.linalg.qr(rng.standard_normal((C, C)))
    return fa.testing.LinearModel(q1 @ np.diag(np.sqrt(lam)) @ q2.T, likelihood="gaussian"), lam.sum()


@given(fst.mlp_models().flatmap(lambda m: st.tuples(st.just(m), fst.inputs(m))))
def test_exact_trace_matches_dense(mx):
    model, x = mx
    expected = np.trace(dense_fisher(model, x), axis1=1, axis2=2)
    t = fa.fisher_trace(model, x, method="exact")
    assert np.allclose(t.value, expected, rtol=1e-10, atol=1e-14 * max(1.0, expected.max()))
    assert np.all(t.stderr == 0)


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp"])
def test_unbiased_and_intervals_cover(method):
    model, true = _spectral_model(1.0)
    x = np.zeros((1, 90))
    runs = [fa.fisher_trace(model, x, method=method, k=48, seed=s) for s in SEEDS]
    est = np.array([r.value[0] for r in runs])
    se = np.array([r.stderr[0] for r in runs])
    assert abs(est.mean() - true) <= 4 * est.std(ddof=1) / np.sqrt(len(est))
    coverage = np.mean(np.abs(est - true) <= 2 * se)  # nominal 95%
    assert coverage >= 0.85, coverage
    assert np.all(np.array([r.queries[0] for r in runs]) == (1 + 48 if method == "hutchinson" else 1 + 2 * 48))


def _mean_error_and_se(model, true, method, k):
    runs = [fa.fisher_trace(model, np.zeros((1, 90)), method=method, k=k, seed=s) for s in SEEDS]
    return (np.mean([abs(r.value[0] - true) for r in runs]), np.mean([r.stderr[0] for r in runs]))


def test_hutchpp_error_shrinks_like_one_over_k_and_hutchinson_like_one_over_root_k():
    """Spectrum λ_i = 1/i: quadrupling k cuts Hutch++'s error and standard error by ~4
    (Meyer et al. 2021, Thm 1.1) and Hutchinson's by ~2."""
    model, true = _spectral_model(1.0)
    e_pp = [_mean_error_and_se(model, true, "hutchpp", k) for k in (9, 36)]
    e_h = [_mean_error_and_se(model, true, "hutchinson", k) for k in (9, 36)]
    for i in (0, 1):
        assert e_pp[1][i] / e_pp[0][i] <= 0.33, e_pp
        assert 0.38 <= e_h[1][i] / e_h[0][i] <= 0.7, e_h


def test_hutchpp_is_exact_once_the_sketch_spans_the_range():
    model, true = _spectral_model(1.0, C=6)
    t = fa.fisher_trace(model, np.zeros((1, 6)), method="hutchpp", k=30)
    assert np.allclose(t.value, true, rtol=1e-12)
