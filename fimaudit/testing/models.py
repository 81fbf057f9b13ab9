r"""Small numpy models with hand-written Jacobians, and dense float64 references.

* :class:`LinearModel`: ``z = W x + b``, so ``J = W`` for every x and, for a
  categorical likelihood, ``F(x) = Wᵀ (diag p − p pᵀ) W`` in closed form;
  :class:`ForwardLinearModel` the same with jvps only.
* :class:`MLPModel`: ``h₀ = x``, ``h_{l+1} = tanh(W_l h_l + b_l)``, ``z = W_L h_L + b_L``.
  Its Jacobian is ``J = W_L D_L W_{L−1} … D_1 W_0`` with ``D_l = diag(1 − h_l²)``,
  written out by hand (no autodiff), so it is an independent answer for the adapters.

``dense_fisher`` forms the d × d matrix ``Jᵀ M J`` directly from the metric table of
docs/design.md (no factor R, no output-space trick): the reference the estimators are
checked against.
"""

from __future__ import annotations

import math

import numpy as np

from ..models import Model

__all__ = [
    "LinearModel",
    "ForwardLinearModel",
    "SPECTRA",
    "spectral_jacobian",
    "MLPModel",
    "ShiftedModel",
    "ScaledInputModel",
    "dense_metric",
    "dense_fisher",
    "jacobian",
]


class LinearModel(Model):
    """Logits ``W x + b`` (x flattened); numpy in, numpy out."""

    def __init__(self, W, b=None, input_shape=None, **options):
        W = np.asarray(W)
        input_shape = (W.shape[1],) if input_shape is None else tuple(input_shape)
        super().__init__(input_shape=input_shape, num_outputs=W.shape[0], **options)
        self.W = W
        self.b = np.zeros(W.shape[0], W.dtype) if b is None else np.asarray(b, W.dtype)

    def forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.W.T + self.b

    def jvp(self, x, v):
        return v.reshape(v.shape[0], -1) @ self.W.T

    def vjp(self, x, u):
        return (u @ self.W).reshape(u.shape[0], *self.input_shape)

    def jacobian(self, x):
        return np.broadcast_to(self.W, (x.shape[0], *self.W.shape))


SPECTRA = {  # eigenvalues of B = J Jᵀ (C = 10) that are hard for a sketch's interval, and an easy one
    "flat": np.r_[np.ones(9), 0.0],
    "two-equal": np.r_[1.0, 1.0, 0.5 ** np.arange(1, 9)],
    "rank-1": np.r_[1.0, np.zeros(9)],
    "geometric": 0.5 ** np.arange(10),
}


def spectral_jacobian(mu, d, rng):
    """A C × d Jacobian ``J = U diag(√μ) Vᵀ`` with Haar U (C × C) and orthonormal V (d × C),
    so the eigenvalues of ``J Jᵀ`` are exactly ``mu`` (C = len(mu))."""
    C = len(mu)
    U = np.linalg.qr(rng.standard_normal((C, C)))[0]
    V = np.linalg.qr(rng.standard_normal((d, C)))[0]
    return (U * np.sqrt(mu)) @ V.T


class ForwardLinearModel(LinearModel):
    """:class:`LinearModel` with forward-mode products only (``has_vjp`` False), so the
    jvp-only estimators (sketches, exact from columns) run on a model whose J is known."""

    has_vjp = False

    def jvp_many(self, x, V):
        return V.reshape(*V.shape[:2], -1) @ self.W.T


class MLPModel(Model):
    """A tanh MLP with a linear head and hand-written forward/jvp/vjp (numpy)."""

    def __init__(self, weights, biases, input_shape=None, **options):
        self.weights = [np.asarray(w) for w in weights]
        self.biases = [np.asarray(b) for b in biases]
        d = self.weights[0].shape[1]
        input_shape = (d,) if input_shape is None else tuple(input_shape)
        super().__init__(input_shape=input_shape, num_outputs=self.weights[-1].shape[0], **options)

    @classmethod
    def random(cls, sizes, seed=0, scale=1.0, dtype=np.float64, **options):
        rng = np.random.default_rng(seed)
        ws = [rng.standard_normal((o, i)).astype(dtype) * scale / math.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])]
        bs = [rng.standard_normal(o).astype(dtype) * 0.1 for o in sizes[1:]]
        return cls(ws, bs, **options)

    def _hidden(self, x):
        hs = [x.reshape(x.shape[0], -1)]
        for W, b in zip(self.weights[:-1], self.biases[:-1]):
            hs.append(np.tanh(hs[-1] @ W.T + b))
        return hs

    def forward(self, x):
        return self._hidden(x)[-1] @ self.weights[-1].T + self.biases[-1]

    def jvp(self, x, v):
        hs = self._hidden(x)
        t = v.reshape(v.shape[0], -1)
        for W, h in zip(self.weights[:-1], hs[1:]):
            t = (1.0 - h * h) * (t @ W.T)
        return t @ self.weights[-1].T

    def vjp(self, x, u):
        hs = self._hidden(x)
        g = u @ self.weights[-1]
        for W, h in zip(reversed(self.weights[:-1]), reversed(hs[1:])):
            g = (g * (1.0 - h * h)) @ W
        return g.reshape(u.shape[0], *self.input_shape)

    def jacobian(self, x):
        hs = self._hidden(x)
        n = x.shape[0]
        J = np.broadcast_to(self.weights[0], (n, *self.weights[0].shape))
        for W, h in zip(self.weights[1:], hs[1:]):
            J = np.einsum("oi,ni,nid->nod", W, 1.0 - h * h, J)
        return J


class ShiftedModel(Model):
    """``z(x) + (aᵀx + c)·1``: the same affine shift added to every logit of an input.

    For a categorical likelihood F is unchanged: ``M 1 = p − p (pᵀ1) = 0``, so the
    extra Jacobian term ``1 aᵀ`` drops out of ``Jᵀ M J``.
    """

    def __init__(self, inner, a, c=0.0):
        super().__init__(inner=inner)
        self.inner, self.a, self.c = inner, np.asarray(a).reshape(-1), float(c)

    def _shift(self, v):
        return v.reshape(v.shape[0], -1) @ self.a

    def forward(self, x):
        return self.inner.forward(x) + (self._shift(x) + self.c)[:, None]

    def jvp(self, x, v):
        return self.inner.jvp(x, v) + self._shift(v)[:, None]

    def vjp(self, x, u):
        g = np.sum(u, axis=1)[:, None] * self.a[None, :]
        return self.inner.vjp(x, u) + g.reshape(u.shape[0], *self.inner.input_shape)


class ScaledInputModel(Model):
    """``z(x / a)``: evaluated at a·x it equals the inner model at x, with F divided by a²."""

    def __init__(self, inner, a):
        super().__init__(inner=inner)
        self.inner, self.a = inner, float(a)

    def forward(self, x):
        return self.inner.forward(x / self.a)

    def jvp(self, x, v):
        return self.inner.jvp(x / self.a, v / self.a)

    def vjp(self, x, u):
        return self.inner.vjp(x / self.a, u) / self.a


def dense_metric(z, likelihood="categorical", sigma=1.0):
    """M(z) per row of z (n, C), float64, straight from the table in docs/design.md."""
    z = np.asarray(z, np.float64)
    n, C = z.shape
    if likelihood == "categorical":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        out = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
        # diagonal as p_i · Σ_{j≠i} p_j: no cancellation in p_i(1 − p_i) when p_i ≈ 1
        others = np.stack([np.delete(p, i, axis=1).sum(axis=1) for i in range(C)], axis=1)
        out[:, np.arange(C), np.arange(C)] = p * others
        return out
    if likelihood == "bernoulli":
        s = 1.0 / (1.0 + np.exp(-z))
        return np.stack([np.diag(v) for v in s / (1.0 + np.exp(z))])  # σ(z)σ(−z), no 1 − σ
    return np.broadcast_to(np.eye(C) / sigma**2, (n, C, C)).copy()


def jacobian(model, x):
    """(n, C, d) Jacobian: the model's hand-written one when it has it."""
    if hasattr(model, "jacobian"):
        J = model.jacobian(x)
    else:  # rows from vjps with unit cotangents
        n, C = x.shape[0], model.num_outputs
        J = np.stack([model.vjp(x, np.tile(np.eye(C)[c], (n, 1))).reshape(n, -1) for c in range(C)], axis=1)
    return np.asarray(J, np.float64).reshape(x.shape[0], -1, int(np.prod(x.shape[1:])))


def dense_fisher(model, x):
    """The d × d matrices F(x) = Jᵀ M J, float64, one per input (small d only)."""
    J = jacobian(model, x)
    M = dense_metric(model.forward(x), model.likelihood, model.sigma)
    return np.einsum("nca,ncb,nbe->nae", J, M, J)
