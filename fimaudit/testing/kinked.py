"""A ReLU network with known exact λ_max whose inputs sit near kinks: a test of the
finite-difference kink repair against the active-pattern Jacobian."""

import numpy as np


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def kinked_relu_network(seed, n=48, d=16, hidden=64, C=5):
    """A float32 ReLU network where a few hidden units sit within a few 1e-3 of their kinks
    at the inputs (the rest far from theirs), and the exact λ_max at each input (float64,
    from the active pattern)."""
    rng = np.random.default_rng(seed)
    W1 = rng.standard_normal((hidden, d)) / np.sqrt(d)
    W2 = rng.standard_normal((C, hidden)) / np.sqrt(hidden)
    x0 = rng.uniform(0.2, 0.8, d)
    b1 = -W1 @ x0 + np.where(np.arange(hidden) < 6, 3e-3, 0.5) * rng.standard_normal(hidden)
    X = (x0 + 1e-3 * rng.standard_normal((n, d))).astype(np.float32)

    def probs(b):
        a = np.maximum(b.astype(np.float32) @ W1.T.astype(np.float32) + b1.astype(np.float32), 0)
        return softmax((a @ W2.T.astype(np.float32)).astype(np.float64)).astype(np.float32)

    pre = X.astype(np.float64) @ W1.T + b1
    truth = []
    for i in range(n):
        J = W2 @ ((pre[i] > 0)[:, None] * W1)
        p = softmax((np.maximum(pre[i], 0) @ W2.T)[None])[0]
        truth.append(np.linalg.eigvalsh(J.T @ (np.diag(p) - np.outer(p, p)) @ J)[-1])
    return probs, X, np.array(truth)
