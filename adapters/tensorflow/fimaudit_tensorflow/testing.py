"""Keras twins of the torch zoo's models (:mod:`fimaudit_torch.testing`), holding the same weights."""

import numpy as np


def _np(t):
    return t.detach().double().numpy()


def mlp_twin(torch_seq, dtype="float32"):
    import keras

    linears = [m for m in torch_seq if hasattr(m, "weight")]
    inp = keras.Input((linears[0].weight.shape[1],), dtype=dtype)
    h = inp
    for i, lin in enumerate(linears):
        layer = keras.layers.Dense(
            lin.weight.shape[0], activation="tanh" if i < len(linears) - 1 else None, dtype=dtype
        )
        h = layer(h)
        layer.set_weights([_np(lin.weight).T, _np(lin.bias)])
    return keras.Model(inp, h)


def smooth_cnn_twin(torch_net, dtype="float32"):
    """torch smooth_cnn (NCHW) → Keras (NHWC inside, NCHW at the boundary)."""
    import keras

    conv1, conv2, lin = torch_net[0], torch_net[3], torch_net[7]
    inp = keras.Input((3, 16, 16), dtype=dtype)
    h = keras.layers.Permute((2, 3, 1), dtype=dtype)(inp)
    c1 = keras.layers.Conv2D(conv1.out_channels, 3, padding="same", dtype=dtype)
    h = c1(h)
    h = keras.layers.Activation(lambda t: keras.activations.gelu(t, approximate=False), dtype=dtype)(h)
    h = keras.layers.AveragePooling2D(2, dtype=dtype)(h)
    c2 = keras.layers.Conv2D(conv2.out_channels, 3, padding="same", dtype=dtype)
    h = c2(h)
    h = keras.layers.Activation("tanh", dtype=dtype)(h)
    h = keras.layers.AveragePooling2D(4, dtype=dtype)(h)
    h = keras.layers.Permute((3, 1, 2), dtype=dtype)(h)  # back to (C, H, W) before flattening
    h = keras.layers.Flatten(dtype=dtype)(h)
    d = keras.layers.Dense(lin.out_features, dtype=dtype)
    out = d(h)
    model = keras.Model(inp, out)
    c1.set_weights([np.transpose(_np(conv1.weight), (2, 3, 1, 0)), _np(conv1.bias)])
    c2.set_weights([np.transpose(_np(conv2.weight), (2, 3, 1, 0)), _np(conv2.bias)])
    d.set_weights([_np(lin.weight).T, _np(lin.bias)])
    return model
