"""A Keras model, ``tf.Module`` or ``tf.function`` as a fimaudit :class:`~fimaudit.Model`.

Products are compiled once per model with fixed input signatures (batch axis free), so
repeated products do not retrace: ``jvp`` with ``tf.autodiff.ForwardAccumulator``,
``vjp`` with ``tf.GradientTape(output_gradients=u)``. Keras models are always called with
``training=False``. Inputs are cast to the model's dtype (float32 or float64); results
come back as numpy arrays.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fimaudit.errors import InvalidArgumentError
from fimaudit.models import Model


def _keras():
    import sys

    return sys.modules.get("keras")


class TFModel(Model):
    """Options: ``input_shape`` (taken from a Keras model when it has one),
    ``output_index`` (for models with several outputs), ``dtype``, and the contract
    options ``num_outputs``, ``output``, ``likelihood``, ``sigma``."""

    def __init__(self, model, *, input_shape=None, output_index=None, dtype=None, **options):
        keras = _keras()
        is_keras = keras is not None and isinstance(model, keras.Model)
        if is_keras:
            inputs = getattr(model, "inputs", None) or []
            if len(inputs) > 1:
                raise InvalidArgumentError(
                    f"the Keras model has {len(inputs)} inputs; fimaudit audits one input tensor: wrap a "
                    "keras.Model that takes one input (fix the others inside it)"
                )
            outputs = getattr(model, "outputs", None) or []
            if len(outputs) > 1 and output_index is None:
                raise InvalidArgumentError(
                    f"the Keras model has {len(outputs)} outputs; pass output_index= to pick the logits"
                )
            if input_shape is None and inputs:
                shape = tuple(inputs[0].shape[1:])
                if all(s is not None for s in shape):
                    input_shape = shape
            if dtype is None:
                dtype = (str(inputs[0].dtype) if inputs else None) or getattr(model, "compute_dtype", None) or "float32"
        if input_shape is None:
            raise InvalidArgumentError("input_shape=(...) is needed for this TensorFlow model")
        super().__init__(input_shape=input_shape, **options)
        self.tf_model = model
        self.tf_dtype = tf.as_dtype(dtype or "float32")
        self.output_index = output_index
        spec = tf.TensorSpec([None, *self.input_shape], self.tf_dtype)

        def call(x):
            y = model(x, training=False) if is_keras else model(x)
            if isinstance(y, (list, tuple, dict)):
                items = list(y.values()) if isinstance(y, dict) else list(y)
                if output_index is None:
                    raise InvalidArgumentError(
                        f"the model returns {len(items)} outputs; pass output_index= to pick the logits"
                    )
                y = items[output_index]
            return tf.reshape(tf.cast(y, self.tf_dtype), [tf.shape(y)[0], -1])

        self._call = call
        self._forward = tf.function(call, input_signature=[spec])

        @tf.function(input_signature=[spec, spec])
        def jvp(x, v):
            with tf.autodiff.ForwardAccumulator(x, v) as acc:
                y = call(x)
            return acc.jvp(y)

        @tf.function(input_signature=[spec, tf.TensorSpec([None, None], self.tf_dtype)])
        def vjp(x, u):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = call(x)
            return tape.gradient(y, x, output_gradients=u)

        self._jvp, self._vjp = jvp, vjp
        self._spec = spec

    def _t(self, a):
        return tf.convert_to_tensor(np.asarray(a), dtype=self.tf_dtype)

    def forward(self, x):
        return self._forward(self._t(x)).numpy()

    def jvp(self, x, v):
        return self._jvp(self._t(x), self._t(v)).numpy()

    def vjp(self, x, u):
        return self._vjp(self._t(x), self._t(u)).numpy()

    def to_onnx(self, opset=17):
        """The model as an ``onnx.ModelProto`` through tf2onnx's ``from_function`` (which,
        unlike ``from_keras``, handles Keras 3 Sequential models)."""
        import tf2onnx

        proto, _ = tf2onnx.convert.from_function(self._forward, input_signature=[self._spec], opset=opset)
        return proto
