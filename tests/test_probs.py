"""Models that return probabilities: logits taken as log(max(p, tiny)), floors reported."""

import numpy as np

import fimaudit as fa
from fimaudit.testing import LinearModel


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
