"""R for a batch of logits, applied without forming it: the factor of each likelihood's
metric (:mod:`fimaudit.likelihoods`), ``M = RᵀR``."""

from __future__ import annotations

from dataclasses import dataclass

from ._array import device


@dataclass(frozen=True)
class Factor:
    """R for a batch of logits: ``apply`` computes R u, ``apply_t`` Rᵀ w (last axis C).

    ``u``/``w`` have shape (n, C) or (n, k, C); the batch axis lines up with the logits.
    For the categorical factor ``R = diag(s)(I − 1pᵀ)`` the component of the top class
    i* is evaluated without the cancellation in ``1 − p_{i*}`` (see ``_categorical``).
    """

    kind: str
    s: object  # categorical: √p; bernoulli: r; gaussian: None
    scale: float
    xp: object
    p: object = None  # categorical: p
    top: object = None  # categorical: one-hot mask of the arg-max class
    rest: object = None  # categorical: 1 − p_{i*} = Σ_{j≠i*} p_j, summed without cancellation

    def _b(self, a, u):
        return a if u.ndim == 2 else a[:, None, :]

    def apply(self, u):
        if self.kind == "gaussian":
            return u * self.scale
        s = self._b(self.s, u)
        if self.kind == "bernoulli":
            return s * u
        xp, p, top = self.xp, self._b(self.p, u), self._b(self.top, u)
        # (I − 1pᵀ)u: u_i − p·u; at i*: Σ_j p_j (u_{i*} − u_j), whose j = i* term is exactly 0.
        w = u - xp.sum(p * u, axis=-1, keepdims=True)
        u_top = xp.sum(xp.where(top, u, xp.zeros_like(u)), axis=-1, keepdims=True)
        w_top = xp.sum(p * (u_top - u), axis=-1, keepdims=True)
        return s * xp.where(top, w_top, w)

    def apply_t(self, w):
        if self.kind == "gaussian":
            return w * self.scale
        s = self._b(self.s, w)
        if self.kind == "bernoulli":
            return s * w
        xp, p, top = self.xp, self._b(self.p, w), self._b(self.top, w)
        # (I − p1ᵀ)(s∘w): sw_i − p_i Σ_j sw_j; at i*: sw_{i*}(1 − p_{i*}) − p_{i*} Σ_{j≠i*} sw_j.
        zero = xp.zeros_like(w)
        sw = s * w
        out = sw - p * xp.sum(sw, axis=-1, keepdims=True)
        sw_top = xp.sum(xp.where(top, sw, zero), axis=-1, keepdims=True)
        p_top = xp.sum(xp.where(top, p, zero), axis=-1, keepdims=True)
        other = xp.sum(xp.where(top, zero, sw), axis=-1, keepdims=True)
        out_top = sw_top * self._b(self.rest, w) - p_top * other
        return xp.where(top, out_top, out)

    def dense(self, n, C, like):
        """R as an (n, C, C) array."""
        xp = self.xp
        eye = xp.eye(C, dtype=like.dtype, device=device(like))
        E = xp.broadcast_to(eye[None, :, :], (n, C, C))
        # apply acts on the last axis: rows of apply(I) are R e_j, the columns of R.
        return xp.permute_dims(self.apply(E), (0, 2, 1))
