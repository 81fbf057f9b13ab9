"""Numerics that have no meaning are refused: hard-label black boxes, input scales finite differences cannot resolve."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit import errors as E
from fimaudit.testing import LinearModel, dense_fisher

seeds = st.integers(0, 2**32 - 1)


def linear(seed, C=3, d=4, n=3, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((C, d)) * scale, rng.standard_normal((n, d))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@settings(max_examples=10, deadline=None)
@given(seeds, st.integers(2, 5))
def test_a_categorical_black_box_answering_one_hot_labels_is_refused(seed, C):
    W, X = linear(seed, C=C)
    m = fa.wrap(lambda x: np.eye(C)[np.argmax(x @ W.T, axis=1)], input_shape=(4,))
    with pytest.raises(E.InvalidModelOutputError, match="hard labels") as err:
        fa.fisher_norm(m, X)
    assert "not defined" in str(err.value) and "probabilities" in str(err.value) and "output='logits'" in str(err.value)


@settings(max_examples=10, deadline=None)
@given(seeds)
def test_a_bernoulli_black_box_answering_thresholded_labels_is_refused(seed):
    W, X = linear(seed)
    m = fa.wrap(lambda x: (x @ W.T > 0).astype(float), input_shape=(4,), likelihood="bernoulli")
    with pytest.raises(E.InvalidModelOutputError, match="hard labels"):
        fa.fisher_norm(m, X)


def test_an_audit_of_a_hard_label_black_box_says_why_each_row_has_no_number():
    W, X = linear(0)
    m = fa.wrap(lambda x: np.eye(3)[np.argmax(x @ W.T, axis=1)], input_shape=(4,))
    a = fa.audit(m, X, progress=False, bound=False)
    assert all(r["lambda_max"] is None and "hard labels" in r["status"] for r in a.rows)


@pytest.mark.filterwarnings("ignore::fimaudit.errors.NoiseDominatesWarning")  # input 0's rounded answers
@settings(max_examples=10, deadline=None)
@given(seeds)
def test_probabilities_that_round_to_one_but_are_not_labels_are_measured(seed):
    W, X = linear(seed, scale=2.0)
    z = np.sort(X[0] @ W.T)
    assume(z[-1] - z[0] < 15 * (z[-1] - z[-2]))  # a scale exists where no class rounds to 0
    X[0] *= 40.0 / (z[-1] - z[-2])  # the top class of input 0 rounds to exactly 1.0, no class to 0
    p = softmax(X @ W.T)
    assert p[0].max() == 1.0 and p.min() > 0.0
    m = fa.wrap(lambda x: softmax(x @ W.T), input_shape=(4,))
    r = fa.fisher_norm(m, X)
    dense = np.linalg.eigvalsh(dense_fisher(LinearModel(W), X))[:, -1]
    assert np.allclose(r.value, dense, rtol=1e-3, atol=1e-9 * dense.max())


def test_a_batch_where_only_some_rows_are_saturated_is_accepted():
    m = fa.wrap(lambda x: np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]]), input_shape=(4,))
    assert m.forward(np.zeros((2, 4))).shape == (2, 3)
    one_hot = fa.wrap(lambda x: np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), input_shape=(4,))
    with pytest.raises(E.InvalidModelOutputError, match="every row of a batch of 2"):
        one_hot.forward(np.zeros((2, 4)))


def scaled_black_box(W, s, calls):
    """softmax((x / s) Wᵀ): the same model at every input scale s; rows sent are counted."""

    def f(x):
        calls.append(len(x))
        return softmax((np.asarray(x, np.float64) / s) @ W.T)

    return fa.wrap(f, input_shape=(W.shape[1],))


@pytest.mark.parametrize(
    ("exponent", "dtype"), [(300, np.float64), (-170, np.float64), (38, np.float32), (-30, np.float32)]
)
def test_input_scales_finite_differences_cannot_resolve_are_refused_before_any_query(exponent, dtype):
    W, X = linear(0)
    s = 10.0**exponent
    calls = []
    with pytest.raises(E.InvalidArgumentError, match=r"input 0 has scale .*e[+-]\d+ .*outside \[.*\]") as err:
        fa.fisher_norm(scaled_black_box(W, s, calls), (X * s).astype(dtype))
    assert np.dtype(dtype).name in str(err.value) and "rescale" in str(err.value)
    assert calls == []


@pytest.mark.filterwarnings("ignore::fimaudit.errors.NoiseDominatesWarning")
@settings(max_examples=10, deadline=None)
@given(seeds, st.integers(-140, 140))
def test_input_scales_inside_the_range_are_measured_as_at_scale_one(seed, exponent):
    W, X = linear(seed)
    s = 10.0**exponent
    r = fa.fisher_norm(scaled_black_box(W, s, []), X * s)
    dense = np.linalg.eigvalsh(dense_fisher(LinearModel(W), X))[:, -1]  # F scales as 1/s²
    assert np.allclose(np.asarray(r.value) * s**2, dense, rtol=1e-3)
