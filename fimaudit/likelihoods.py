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

* categorical: with ``s = √p = exp((z − logsumexp z)/2)`` (‖s‖ = 1),
  ``R = (I − s sᵀ) diag(s)``; since ``I − s sᵀ`` is an orthogonal projector,
  ``RᵀR = diag(s)(I − s sᵀ)diag(s) = diag(p) − p pᵀ``.
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
    """

    kind: str
    s: object  # categorical: √p; bernoulli: r; gaussian: None
    scale: float
    xp: object

    def _b(self, u):
        return self.s if u.ndim == 2 else self.s[:, None, :]

    def apply(self, u):
        if self.kind == "gaussian":
            return u * self.scale
        s = self._b(u)
        if self.kind == "bernoulli":
            return s * u
        su = s * u
        return su - s * self.xp.sum(s * su, axis=-1, keepdims=True)

    def apply_t(self, w):
        if self.kind == "gaussian":
            return w * self.scale
        s = self._b(w)
        if self.kind == "bernoulli":
            return s * w
        return s * (w - s * self.xp.sum(s * w, axis=-1, keepdims=True))

    def dense(self, n, C, like):
        """R as an (n, C, C) array."""
        xp = self.xp
        eye = xp.eye(C, dtype=like.dtype, device=device(like))
        E = xp.broadcast_to(eye[None, :, :], (n, C, C))
        # columns of R: R e_j. apply works on the last axis, so apply to rows of I and transpose.
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
        s = xp.exp(0.5 * (shifted - lse))
        return Factor("categorical", s, 1.0, xp)

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
        raise InvalidArgumentError(
            f"unknown likelihood {name!r}: use one of {sorted(LIKELIHOODS)}"
        ) from None
    return cls(sigma) if cls is Gaussian else cls()
