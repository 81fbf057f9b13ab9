r"""Likelihoods: the output-space metric M(x) and a stable factor R with M = RᵀR.

A likelihood turns logits ``z ∈ R^C`` into a distribution over outputs; its Fisher
metric in logit space is ``M(z)`` (DESIGN.md §1):

============  ==========================  ======================  ============
name          distribution                M(z)                    λ_max(M) ≤
============  ==========================  ======================  ============
categorical   p = softmax(z)              diag(p) − p pᵀ          1/2
bernoulli     σ(z_c) independent          diag(σ(z)(1 − σ(z)))    1/4
gaussian      N(z, σ² I)                  I / σ²                  1/σ²
============  ==========================  ======================  ============

The input Fisher is ``F = Jᵀ M J = (R J)ᵀ (R J)`` and its nonzero spectrum is that of
the C×C matrix ``B = R J Jᵀ Rᵀ``. Any factor R with ``RᵀR = M`` works; we use ones that
are computed without ``log p`` and without forming ``M^{1/2}``:

* categorical: with ``s = √p = exp((z − logsumexp z)/2)``, ``R = diag(s)(I − 1pᵀ)``:
  ``RᵀR = (I − p1ᵀ) diag(p) (I − 1pᵀ) = diag(p) − 2ppᵀ + p(1ᵀp)pᵀ = diag(p) − p pᵀ``.
  The arg-max component is summed so that ``1 − p_{i*}`` is never formed by
  subtraction: saturated outputs keep full relative accuracy.
* bernoulli: ``R = diag(r)``, ``r = √(σ(z)σ(−z)) = exp(−|z|/2) / (1 + exp(−|z|))``.
* gaussian: ``R = I/σ``.

Saturated logits (±1e4) give p with exact zeros and a finite R: nothing overflows.
Reference: Amari, *Information Geometry and Its Applications* (2016), §2 (Fisher
metric of exponential families); Martens, "New insights and perspectives on the
natural gradient method", JMLR 21 (2020), §9 (the output-space factorisation).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._array import device
from .errors import InvalidArgumentError

__all__ = ["Likelihood", "get_likelihood", "LIKELIHOODS"]


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


class Likelihood:
    """A likelihood: its name, the factor of its metric, and its rank and norm bounds."""

    name = ""

    def __init__(self, sigma: float = 1.0):
        if not (sigma > 0):
            raise InvalidArgumentError(f"sigma must be > 0 (the Gaussian noise scale), got {sigma!r}")
        self.sigma = float(sigma)

    def factor(self, xp, z) -> Factor:  # pragma: no cover - abstract
        raise NotImplementedError

    def metric_rank(self, C: int) -> int:
        """The largest possible rank of M (so of F) for C outputs."""
        return C

    def metric_norm_bound(self) -> float:
        """A bound on λ_max(M(z)) valid for every z."""
        raise NotImplementedError

    def min_outputs(self) -> int:
        return 1

    def __repr__(self):
        return f"{type(self).__name__}()"


class Categorical(Likelihood):
    name = "categorical"

    def factor(self, xp, z):
        zmax = xp.max(z, axis=-1, keepdims=True)
        shifted = z - zmax
        lse = xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
        logp = shifted - lse
        p = xp.exp(logp)
        C = z.shape[-1]
        idx = xp.argmax(z, axis=-1, keepdims=True)
        top = xp.arange(C, device=device(z))[None, :] == idx
        rest = xp.sum(xp.where(top, xp.zeros_like(p), p), axis=-1)
        return Factor("categorical", xp.exp(0.5 * logp), 1.0, xp, p=p, top=top, rest=rest[:, None])

    def metric_rank(self, C):
        return C - 1

    def metric_norm_bound(self):
        return 0.5

    def min_outputs(self):
        return 2


class Bernoulli(Likelihood):
    name = "bernoulli"

    def factor(self, xp, z):
        e = xp.exp(-xp.abs(z))
        return Factor("bernoulli", xp.exp(-0.5 * xp.abs(z)) / (1.0 + e), 1.0, xp)

    def metric_norm_bound(self):
        return 0.25


class Gaussian(Likelihood):
    name = "gaussian"

    def factor(self, xp, z):
        return Factor("gaussian", None, 1.0 / self.sigma, xp)

    def metric_norm_bound(self):
        return 1.0 / self.sigma**2

    def __repr__(self):
        return f"Gaussian(sigma={self.sigma})"


LIKELIHOODS = {"categorical": Categorical, "bernoulli": Bernoulli, "gaussian": Gaussian}


def get_likelihood(name, sigma: float = 1.0) -> Likelihood:
    if isinstance(name, Likelihood):
        return name
    try:
        cls = LIKELIHOODS[name]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"unknown likelihood {name!r}: use one of {sorted(LIKELIHOODS)}") from None
    return cls(sigma) if cls is Gaussian else cls()
