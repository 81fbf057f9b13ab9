"""The likelihood owns the map from a model's outputs to its natural parameters, and the
readouts of an audit; it is stored once, so re-wrapping with another one takes effect
everywhere. References: the same weights as a white-box numpy model with a hand-written
Jacobian (``fimaudit.testing``), its dense float64 Fisher, and closed forms."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit import errors as E
from fimaudit.likelihoods import get_likelihood
from fimaudit.testing import LinearModel, MLPModel, ShiftedModel, dense_fisher

D, C = 6, 4
X = np.random.default_rng(0).standard_normal((5, D))


def _mlp(likelihood, **options):
    return MLPModel.random([D, 10, C], seed=3, scale=2.0, likelihood=likelihood, **options)


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _dense_lambda(model, x):
    return np.linalg.eigvalsh(dense_fisher(model, x))[:, -1]


SERVED = {"categorical": _softmax, "bernoulli": _sigmoid}


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli"])
def test_probability_callables_match_the_white_box_model(likelihood):
    """A model served as probabilities: black-box exact equals the dense float64 Fisher of the
    same weights (a Bernoulli model read as log p gave 0.28× of it)."""
    model = _mlp(likelihood)
    truth = _dense_lambda(model, X)
    bb = fa.wrap(lambda b: SERVED[likelihood](model.forward(b)), input_shape=(D,), likelihood=likelihood)
    assert bb.output == "probs"
    r = fa.fisher_norm(bb, X, method="exact")
    assert np.allclose(r.value, truth, rtol=1e-7)
    assert np.allclose(fa.fisher_norm(model, X).value, truth, rtol=1e-10)
    assert np.all(r.floored == 0)


def test_categorical_probability_brackets_hold():
    model = _mlp("categorical")
    truth = _dense_lambda(model, X)
    r = fa.fisher_norm(fa.wrap(lambda b: _softmax(model.forward(b)), input_shape=(D,)), X, method="exact")
    assert np.all((r.lower <= truth) & (truth <= r.upper))


def test_bernoulli_probability_brackets_hold():
    """The output noise is measured on the log-odds, which move 1/(1 − p) times more than log p:
    measured on log p, these brackets missed the truth."""
    model = _mlp("bernoulli")
    truth = _dense_lambda(model, X)
    bb = fa.wrap(lambda b: _sigmoid(model.forward(b)), input_shape=(D,), likelihood="bernoulli")
    r = fa.fisher_norm(bb, X, method="exact")
    assert np.all((r.lower <= truth) & (truth <= r.upper))


def test_gaussian_means_match_and_probabilities_are_refused():
    model = _mlp("gaussian", sigma=0.7)
    truth = _dense_lambda(model, X)
    bb = fa.wrap(model.forward, input_shape=(D,), likelihood="gaussian", sigma=0.7)
    assert bb.output == "logits"  # a Gaussian model's outputs are its means
    r = fa.fisher_norm(bb, X, method="exact")
    assert np.allclose(r.value, truth, rtol=1e-7)
    assert np.all((r.lower <= truth) & (truth <= r.upper))
    for make in [
        lambda: fa.wrap(model.forward, input_shape=(D,), likelihood="gaussian", output="probs"),
        lambda: LinearModel(np.eye(3), likelihood="gaussian", output="probs"),
        lambda: _mlp("bernoulli", output="probs").with_options(likelihood="gaussian"),
        lambda: model.with_options(output="probs"),
    ]:
        with pytest.raises(E.InvalidArgumentError, match="means, not probabilities"):
            make()


class SigmoidOf(fa.Model):
    """σ(W x + b) with its exact Jacobian diag(σ(1 − σ)) W, a white-box Bernoulli probability model."""

    def __init__(self, lin):
        super().__init__(
            input_shape=lin.input_shape, num_outputs=lin.num_outputs, output="probs", likelihood="bernoulli"
        )
        self.lin = lin

    def forward(self, x):
        return _sigmoid(self.lin.forward(x))

    def jvp(self, x, v):
        z = self.lin.forward(x)
        return _sigmoid(z) * _sigmoid(-z) * self.lin.jvp(x, v)

    def vjp(self, x, u):
        z = self.lin.forward(x)
        return self.lin.vjp(x, _sigmoid(z) * _sigmoid(-z) * u)


def test_white_box_bernoulli_probabilities_near_one_keep_their_accuracy():
    """Labels with p = σ(z) for z near ±25 (1 − p ≈ 1e-11): the log-odds, and F, are those of
    the logit model; labels at exactly 1 (z = 60 rounds σ to 1.0) are floored and counted."""
    rng = np.random.default_rng(2)
    W = rng.standard_normal((C, D))
    lin = LinearModel(W, np.array([25.0, -25.0, 3.0, 0.0]), likelihood="bernoulli")
    r = fa.fisher_norm(SigmoidOf(lin), X, method="exact")
    assert np.allclose(r.value, _dense_lambda(lin, X), rtol=1e-6)
    assert np.all(r.floored == 0)
    sat = LinearModel(W, np.array([60.0, 0.0, 1.0, -1.0]), likelihood="bernoulli")
    r = fa.fisher_norm(SigmoidOf(sat), np.zeros((2, D)), method="exact")
    assert np.all(r.floored == 1)
    live = LinearModel(W[1:], np.array([0.0, 1.0, -1.0]), likelihood="bernoulli")  # the floored label dropped
    assert np.allclose(r.value, _dense_lambda(live, np.zeros((2, D))), rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-35.0, 35.0), min_size=1, max_size=6))
def test_bernoulli_natural_parameters_are_the_log_odds_of_the_rounded_probability(zs):
    """log p − log1p(−p) against the log-odds of the same float64 p in extended precision
    (1 − p is exact there), and ∂z/∂p against 1/(p(1 − p))."""
    p = _sigmoid(np.asarray(zs, np.float64))[None, :]
    z, dz, live = get_likelihood("bernoulli").natural_from_probs(np, p)
    q = p.astype(np.longdouble)
    ref = np.log(q) - np.log(np.longdouble(1) - q)
    assert np.all(live == (p < 1.0))
    assert np.allclose(z[live], ref[live].astype(np.float64), rtol=1e-13, atol=1e-15)
    ref_dz = (1 / (q * (np.longdouble(1) - q))).astype(np.float64)
    assert np.allclose(dz[live], ref_dz[live], rtol=1e-13)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50.0, 50.0), min_size=2, max_size=6))
def test_categorical_natural_parameters_are_log_p(zs):
    p = _softmax(np.asarray(zs, np.float64)[None, :])
    z, dz, live = get_likelihood("categorical").natural_from_probs(np, p)
    assert np.array_equal(z, np.log(p)) and np.allclose(dz, 1 / p, rtol=1e-15) and np.all(live)


def _probs_fn(model, likelihood):
    return lambda b: SERVED[likelihood](model.forward(b))


@pytest.mark.parametrize("served,rewrapped", [("bernoulli", "categorical"), ("categorical", "bernoulli")])
def test_rewrapping_a_black_box_changes_the_likelihood_everywhere(served, rewrapped):
    """Wrapped first with one likelihood, then re-wrapped with the other: output validation,
    the map to natural parameters and the metric all follow the new one; the first wrapper is
    untouched."""
    model = _mlp(served)
    bb = fa.wrap(_probs_fn(model, served), input_shape=(D,), likelihood=rewrapped)
    if served == "bernoulli":  # σ outputs do not sum to 1: a categorical model refuses them
        with pytest.raises(E.InvalidModelOutputError, match="sum to"):
            fa.fisher_norm(bb, X, method="exact")
    again = fa.wrap(bb, likelihood=served)
    assert (again.likelihood, again.inner.likelihood) == (served, served)
    assert (bb.likelihood, bb.inner.likelihood) == (rewrapped, rewrapped)
    r = fa.fisher_norm(again, X, method="exact")
    assert np.allclose(r.value, _dense_lambda(model, X), rtol=1e-7)


@pytest.mark.parametrize("first,second", [("categorical", "bernoulli"), ("bernoulli", "categorical")])
def test_rewrapping_a_white_box_model_and_its_wrappers(first, second):
    model = _mlp(first)
    shifted = ShiftedModel(model, np.zeros(D))  # passes the same logits on: the contract is its inner's
    for m in [model, shifted]:
        other = fa.wrap(m, likelihood=second)
        assert other.likelihood == second and m.likelihood == first
        ref = _mlp(second)
        assert np.allclose(fa.fisher_norm(other, X).value, _dense_lambda(ref, X), rtol=1e-9)
        assert np.allclose(fa.fisher_norm(m, X).value, _dense_lambda(model, X), rtol=1e-9)
    assert fa.wrap(shifted, likelihood=second).inner.likelihood == second


def test_audit_reads_bernoulli_predictions_off_the_log_odds():
    model = _mlp("bernoulli")
    bb = fa.wrap(lambda b: _sigmoid(model.forward(b)), input_shape=(D,), likelihood="bernoulli")
    a = fa.audit(bb, X, method="exact", progress=False, bound=False)
    z = model.forward(X)
    assert [r["prediction"] for r in a.rows] == np.argmax(z, 1).tolist()
    assert np.allclose([r["confidence"] for r in a.rows], 1 / (1 + np.exp(-z.max(1))), rtol=1e-7)
    assert np.allclose([r["margin"] for r in a.rows], np.abs(z).min(1), rtol=1e-6)
    white = fa.audit(model, X, progress=False, bound=False)
    assert [r["prediction"] for r in white.rows] == np.argmax(z, 1).tolist()
    assert np.allclose([r["margin"] for r in white.rows], np.abs(z).min(1), rtol=1e-12)


def test_audit_of_a_gaussian_model_has_means_and_no_margin(tmp_path):
    model = _mlp("gaussian", sigma=0.5)
    a = fa.audit(model, X, progress=False, bound=False)
    z = model.forward(X)
    assert np.allclose([r["prediction"] for r in a.rows], z[:, 0], rtol=1e-12)
    assert all(r["confidence"] is None and r["margin"] is None for r in a.rows)
    assert all(r["status"] == "ok" for r in a.rows) and "spearman_lambda_vs_margin" not in a.summary
    assert np.allclose(a.lambda_max, _dense_lambda(model, X), rtol=1e-9)
    a.save(tmp_path / "out")
    assert "No confidences" in (tmp_path / "out" / "report.html").read_text()


def test_categorical_audit_readouts_are_softmax_ones():
    model = _mlp("categorical")
    a = fa.audit(model, X, progress=False, bound=False)
    z = model.forward(X)
    top2 = np.sort(z, 1)[:, -2:]
    assert [r["prediction"] for r in a.rows] == np.argmax(z, 1).tolist()
    assert np.allclose([r["confidence"] for r in a.rows], _softmax(z).max(1), rtol=1e-12)
    assert np.allclose([r["margin"] for r in a.rows], top2[:, 1] - top2[:, 0], rtol=1e-12)
