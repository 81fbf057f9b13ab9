"""A model with jvp and no vjp (forward-mode AD) takes the same path as finite differences.

The model here is a numpy tanh network whose Jacobian–vector product is written out by
hand; the reference F = Jᵀ M J is formed densely in float64 from the same hand-written
Jacobian, and rows are counted by the model itself.
"""

import numpy as np
import pytest

import fimaudit as fa

D, H, C = 10, 7, 4
RNG = np.random.default_rng(11)
W1, B1 = RNG.standard_normal((H, D)) / np.sqrt(D) * 1.5, 0.1 * RNG.standard_normal(H)
W2, B2 = RNG.standard_normal((C, H)) / np.sqrt(H) * 2.0, 0.1 * RNG.standard_normal(C)
X = RNG.standard_normal((5, D))


class ForwardMode(fa.Model):
    """z = W2 tanh(W1 x + b1) + b2, with ``forward`` and ``jvp`` only."""

    has_vjp = False

    def __init__(self):
        super().__init__(input_shape=(D,), num_outputs=C)
        self.rows = 0  # forward rows + jvp vectors, per input of a batch of X's size

    def forward(self, x):
        self.rows += 1
        return np.tanh(x @ W1.T + B1) @ W2.T + B2

    def jvp(self, x, v):
        self.rows += 1
        h = np.tanh(x @ W1.T + B1)
        return ((1 - h * h) * (v @ W1.T)) @ W2.T


def reference(x):
    """Dense float64 F per input from the hand-written Jacobian W2 diag(1 − h²) W1."""
    h = np.tanh(x @ W1.T + B1)
    J = np.einsum("ch,nh,hd->ncd", W2, 1 - h * h, W1)
    z = h @ W2.T + B2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    M = np.stack([np.diag(q) - np.outer(q, q) for q in p])
    return np.einsum("nca,ncb,nbe->nae", J, M, J)


F = reference(X)
EVALS = np.linalg.eigvalsh(F)[:, ::-1]
TRUTH = EVALS[:, 0]


def test_exact_takes_d_jvps_and_is_white_box_exact():
    m = ForwardMode()
    r = fa.fisher_norm(m, X, method="exact", return_direction=True)
    assert r.method == "exact" and np.allclose(r.value, TRUTH, rtol=1e-10)
    assert np.all(r.queries == 1 + D) and m.rows == 1 + D  # one forward, d jvps, for the whole batch
    assert r.fd_error is None and np.array_equal(r.lower, r.value) and np.array_equal(r.upper, r.value)
    v = r.direction.reshape(len(X), -1)
    assert np.allclose(np.einsum("na,nab,nb->n", v, F, v), TRUTH, rtol=1e-10)
    assert np.allclose(fa.fisher_norm(ForwardMode(), X).value, TRUTH, rtol=1e-10)  # auto: exact
    s = fa.fisher_spectrum(ForwardMode(), X, k=3)
    assert np.allclose(s.values, EVALS[:, :3], rtol=1e-9, atol=1e-14)
    t = fa.fisher_trace(ForwardMode(), X, method="exact")
    assert np.allclose(t.value, np.trace(F, axis1=1, axis2=2), rtol=1e-10)


def test_sketches_bound_from_below_and_converge_to_the_truth():
    """Over many seeds: the lower bound is certified, the 95% interval covers, and the error
    shrinks as the probes grow to d, where the sketch is exact."""
    errors = []
    for k in (3, 6, 9):
        runs = [fa.fisher_norm(ForwardMode(), X, method="sketch", budget=1 + k, seed=s) for s in range(200)]
        assert all(np.all(r.queries == 1 + k) for r in runs)
        assert np.all(np.array([r.ritz for r in runs]) <= TRUTH * (1 + 1e-12))  # certified: exact products
        cover = np.mean([(r.lower <= TRUTH) & (TRUTH <= r.upper) for r in runs])
        assert cover >= 0.9, (k, cover)
        errors.append(np.mean([np.abs(r.value / TRUTH - 1) for r in runs]))
    assert errors[0] > errors[1] > errors[2], errors
    full = fa.fisher_norm(ForwardMode(), X, method="sketch", budget=1 + D)
    assert np.allclose(full.value, TRUTH, rtol=1e-10)  # k = d spans the input space


@pytest.mark.parametrize("method", ["hutchinson", "sketch"])
def test_traces_are_unbiased(method):
    truth = np.trace(F, axis1=1, axis2=2)
    runs = [fa.fisher_trace(ForwardMode(), X, method=method, k=4, seed=s) for s in range(300)]
    est = np.array([r.value for r in runs])
    se = est.std(0, ddof=1) / np.sqrt(len(runs))
    assert np.all(np.abs(est.mean(0) - truth) <= 4 * se), (est.mean(0), truth, se)
    assert all(np.all(r.queries == 1 + 4) for r in runs)


def test_the_budget_holds_and_the_plan_is_what_happens():
    for budget in (3, 6, 1 + D, 100):
        m = ForwardMode()
        plan = fa.plan(m, X, budget=budget)
        r = fa.fisher_norm(m, X, budget=budget)
        assert np.all(r.queries == m.rows) and m.rows == plan.calls_per_input <= budget
        assert r.method == plan.method == ("exact" if budget >= 1 + D else "sketch")
    m = ForwardMode()
    with pytest.raises(fa.errors.InvalidArgumentError, match="budget >= 3"):
        fa.fisher_norm(m, X, budget=2)
    assert m.rows == 0
