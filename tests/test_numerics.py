"""Numerics that have no meaning are refused: hard-label black boxes, input scales finite differences
cannot resolve; and a black box with many outputs is measured within memory_limit or refused before allocating."""

import json
import os
import subprocess
import sys

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


LARGE_C = """
import json, resource, sys, tracemalloc, warnings
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))  # C × C floats for 2 inputs: 6.4 GB
import numpy as np
import fimaudit as fa

C, d, method, limit = 20000, {d}, {method!r}, {limit}
rng = np.random.default_rng(0)
W = rng.standard_normal((C, d)) * 0.5
X = rng.standard_normal((2, d))
softmax = lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
m = fa.wrap(lambda x: softmax(x @ W.T), input_shape=(d,))
warnings.simplefilter("ignore")
p = softmax(X @ W.T)  # F = Wᵀ (diag p − p pᵀ) W, d × d
g = p @ W
F = np.einsum("ca,nc,cb->nab", W, p, W) - g[:, :, None] * g[:, None, :]
out = dict(dense=np.linalg.eigvalsh(F)[:, -1].tolist())
tracemalloc.start()
try:
    r = fa.fisher_norm(m, X, method=method, memory_limit=limit)
    out.update(value=np.asarray(r.value).tolist(), lower=np.asarray(r.lower).tolist())
except fa.errors.MemoryLimitError as err:
    out.update(error=str(err))
out.update(peak=tracemalloc.get_traced_memory()[1])
print(json.dumps(out))
"""


def run_large_c(d, method, limit):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = LARGE_C.format(d=d, method=method, limit=limit)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("d", "method"), [(3, "exact"), (3, "auto"), (24, "sketch")])
def test_a_black_box_with_20000_outputs_is_measured_without_a_c_by_c_array(d, method):
    limit = 256 << 20  # a twelfth of one input's C × C Gram
    out = run_large_c(d, method, limit)
    assert "error" not in out and out["peak"] <= limit
    if method == "sketch":  # the certified lower bound
        assert all(lo <= v * (1 + 1e-3) for lo, v in zip(out["lower"], out["dense"]))
    else:
        assert np.allclose(out["value"], out["dense"], rtol=1e-3)


def test_a_black_box_with_20000_outputs_is_refused_above_memory_limit_before_allocating():
    out = run_large_c(3, "exact", 1 << 20)
    assert "bytes" in out["error"] and "memory_limit=" in out["error"] and "C=20000" in out["error"]


@pytest.mark.filterwarnings("ignore::fimaudit.errors.NoiseDominatesWarning")
@settings(max_examples=10, deadline=None)
@given(seeds, st.integers(1, 4), st.integers(9, 40), st.sampled_from(["repair", "extrapolate"]))
def test_exact_with_more_outputs_than_columns_equals_the_dense_fisher(seed, d, C, kinks):
    rng = np.random.default_rng(seed)
    W, X = rng.standard_normal((C, d)), rng.standard_normal((3, d))
    m = fa.wrap(lambda x: softmax(x @ W.T), input_shape=(d,), kinks=kinks)
    r = fa.fisher_norm(m, X, method="exact", return_direction=True)
    F = dense_fisher(LinearModel(W), X)
    assert np.allclose(r.value, np.linalg.eigvalsh(F)[:, -1], rtol=1e-4)
    v = np.asarray(r.direction).reshape(3, d)  # the top eigenvector of F
    assert np.allclose(np.einsum("na,nab,nb->n", v, F, v), r.value, rtol=1e-3)
