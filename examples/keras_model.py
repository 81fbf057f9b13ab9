"""Audit a Keras model (white box through TensorFlow's autodiff).

python examples/keras_model.py
"""

import keras
import numpy as np

import fimaudit as fa

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(5)])
x = np.random.default_rng(0).standard_normal((16, 20)).astype(np.float32)

r = fa.fisher_norm(model, x)
t = fa.fisher_trace(model, x)
print("λ_max:", np.round(r.value[:4], 5), "tr F:", np.round(t.value[:4], 5))
print("tr F / λ_max (effective rank):", np.round(t.value[:4] / r.value[:4], 2))
