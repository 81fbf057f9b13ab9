"""Models that return probabilities: read as their likelihood's natural parameters (log p, the
log-odds), floors reported."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.testing import LinearModel, dense_fisher
from fimaudit.testing import strategies as fst


class SoftmaxOf(fa.Model):
    """softmax(W x + b) with its exact Jacobian (diag p − p pᵀ) W, as a vendor model would return."""

    def __init__(self, lin):
        super().__init__(input_shape=lin.input_shape, num_outputs=lin.num_outputs, output="probs")
        self.lin = lin

    def _p(self, x):
        z = self.lin.forward(x)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def forward(self, x):
        return self._p(x)

    def jvp(self, x, v):
        p, Jv = self._p(x), self.lin.jvp(x, v)
        return p * Jv - p * np.sum(p * Jv, 1, keepdims=True)

    def vjp(self, x, u):
        p = self._p(x)
        return self.lin.vjp(x, p * u - p * np.sum(p * u, 1, keepdims=True))


def test_probabilities_give_the_logit_models_fisher():
    rng = np.random.default_rng(0)
    lin = LinearModel(rng.standard_normal((6, 9)), rng.standard_normal(6))
    x = rng.standard_normal((5, 9))
    ref = fa.fisher_norm(lin, x, return_direction=True)
    for method in ["exact", "lanczos"]:
        r = fa.fisher_norm(SoftmaxOf(lin), x, method=method, tol=1e-10, return_direction=True)
        assert np.allclose(r.value, ref.value, rtol=1e-8)
        assert np.allclose(np.abs(np.sum(r.direction * ref.direction, 1)), 1.0, atol=1e-6)
        assert np.all(r.floored == 0)
    assert np.allclose(fa.fisher_trace(SoftmaxOf(lin), x).value, fa.fisher_trace(lin, x).value, rtol=1e-8)


def test_classes_at_the_floor_are_counted_and_harmless():
    """p underflows to exactly 0 for two classes: they are floored (counted), the value stays
    finite and equals the logit model's (those classes carry no Fisher information)."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((4, 5))
    lin = LinearModel(W, np.array([0.0, 0.5, -2000.0, -3000.0]))
    x = rng.standard_normal((3, 5))
    r = fa.fisher_norm(SoftmaxOf(lin), x)
    assert np.all(r.floored == 2)
    assert np.all(np.isfinite(r.value))
    assert np.allclose(r.value, fa.fisher_norm(lin, x).value, rtol=1e-10)


class SigmoidOf(fa.Model):
    """σ(W x + b) per label with its exact Jacobian diag(σ(z)σ(−z)) W: a multi-label vendor model."""

    def __init__(self, lin):
        super().__init__(
            input_shape=lin.input_shape, num_outputs=lin.num_outputs, output="probs", likelihood="bernoulli"
        )
        self.lin = lin

    @staticmethod
    def _s(z):
        return np.exp(-np.logaddexp(0.0, -z))

    def forward(self, x):
        return self._s(self.lin.forward(x))

    def jvp(self, x, v):
        z = self.lin.forward(x)
        return self._s(z) * self._s(-z) * self.lin.jvp(x, v)

    def vjp(self, x, u):
        z = self.lin.forward(x)
        return self.lin.vjp(x, self._s(z) * self._s(-z) * u)


WRAPPERS = {"categorical": SoftmaxOf, "bernoulli": SigmoidOf}


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(sorted(WRAPPERS)).flatmap(
        lambda lik: fst.linear_models(likelihood=lik).flatmap(lambda m: st.tuples(st.just(m), fst.inputs(m)))
    )
)
def test_probabilities_of_either_likelihood_give_the_dense_fisher_of_the_logits(mx):
    """Served as probabilities, a categorical or Bernoulli model has the Fisher of its logits:
    λ_max and the trace against the dense float64 Jᵀ M J of the logit model."""
    lin, x = mx
    F = dense_fisher(lin, x)
    model = WRAPPERS[lin.likelihood](lin)
    r = fa.fisher_norm(model, x, method="exact")
    lam = np.linalg.eigvalsh(F)[:, -1]
    assert np.allclose(r.value, lam, rtol=1e-7, atol=1e-12 * max(1.0, lam.max()))
    tr = np.trace(F, axis1=1, axis2=2)
    assert np.allclose(fa.fisher_trace(model, x, method="exact").value, tr, rtol=1e-7, atol=1e-12 * max(1.0, tr.max()))
