"""fimaudit-tensorflow against hand-written Jacobians, its torch twin, and its ONNX export."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("fimaudit_tensorflow")
torch = pytest.importorskip("torch")

from fimaudit_tensorflow.testing import mlp_twin  # noqa: E402
from fimaudit_torch.testing import mlp_from_numpy  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit import errors as E  # noqa: E402
from fimaudit.testing import MLPModel, check_adapter  # noqa: E402

REF = MLPModel.random([12, 16, 16, 6], seed=4, scale=2.0)
X = np.random.default_rng(1).standard_normal((4, 12))


def test_float64_keras_model_matches_hand_written_jacobians():
    m = fa.wrap(mlp_twin(mlp_from_numpy(REF), dtype="float64"))
    check_adapter(m, X)
    for method in ["exact", "lanczos"]:
        assert np.allclose(
            fa.fisher_norm(m, X, method=method, tol=1e-10).value, fa.fisher_norm(REF, X).value, rtol=1e-9
        )
    assert np.allclose(fa.fisher_trace(m, X).value, fa.fisher_trace(REF, X).value, rtol=1e-10)
    assert np.allclose(fa.fisher_spectrum(m, X, k=3).values, fa.fisher_spectrum(REF, X, k=3).values, rtol=1e-9)


def test_products_do_not_retrace():
    m = fa.wrap(mlp_twin(mlp_from_numpy(REF)))
    for n in (2, 3, 5):
        fa.fisher_norm(m, X[:n].astype(np.float32), method="lanczos", tol=1e-4)
    assert m._jvp.experimental_get_tracing_count() == 1
    assert m._vjp.experimental_get_tracing_count() == 1


def test_tf_function_and_module():
    W = tf.constant(np.random.default_rng(0).standard_normal((12, 5)))

    @tf.function
    def f(x):
        return tf.matmul(x, W)

    class Lin(tf.Module):
        def __call__(self, x):
            return tf.matmul(x, W)

    truth = fa.fisher_norm(fa.testing.LinearModel(W.numpy().T), X).value
    for obj in (f, Lin()):
        m = fa.wrap(obj, input_shape=(12,), dtype="float64")
        assert np.allclose(fa.fisher_norm(m, X).value, truth, rtol=1e-10)


def test_several_inputs_or_outputs():
    a, b = keras.Input((3,)), keras.Input((3,))
    two_in = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    with pytest.raises(E.InvalidArgumentError, match="2 inputs"):
        fa.wrap(two_in)
    x = keras.Input((3,))
    two_out = keras.Model(x, [keras.layers.Dense(4)(x), keras.layers.Dense(1)(x)])
    with pytest.raises(E.InvalidArgumentError, match="output_index"):
        fa.wrap(two_out)
    r = fa.fisher_norm(fa.wrap(two_out, output_index=0), np.ones((2, 3), np.float32))
    assert r.value.shape == (2,)


def test_sequential_model_exports_to_onnx():
    pytest.importorskip("tf2onnx")
    pytest.importorskip("fimaudit_onnx")
    seq = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(6)])
    x = X.astype(np.float32)
    truth = fa.fisher_norm(seq, x).value
    onnx_model = fa.wrap(fa.wrap(seq).to_onnx())
    assert np.allclose(fa.fisher_norm(onnx_model, x, method="exact").value, truth, rtol=2e-3)


def test_subclassed_keras_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.a = keras.layers.Dense(8, activation="tanh")
            self.b = keras.layers.Dense(5)

        def call(self, x):
            return self.b(self.a(x))

    net = Net()
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    net(x)
    m = fa.wrap(net, input_shape=(4,))
    check_adapter(m, x)
    W0, b0 = net.a.get_weights()
    W1, b1 = net.b.get_weights()
    ref = MLPModel([W0.T.astype(np.float64), W1.T.astype(np.float64)], [b0.astype(np.float64), b1.astype(np.float64)])
    assert np.allclose(fa.fisher_norm(m, x).value, fa.fisher_norm(ref, x.astype(np.float64)).value, rtol=1e-4)
