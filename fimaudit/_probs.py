r"""Models that output probabilities: logits taken as ``log(max(p, tiny))``.

Softmax is invariant to adding a per-input constant to the logits, so ``log p`` is a
valid logit vector for a categorical model (DESIGN.md §1). A class whose probability
sits at or below the floor ``tiny`` (the dtype's smallest normal number) is treated as
constant there: its logit derivative is set to 0 instead of ``J_p / p`` overflowing.
``floored`` counts such classes per input, and results report it.
Chain rule: ``∂ log p_c = ∂p_c / p_c`` for p_c above the floor.
"""

from __future__ import annotations

import numpy as np

from ._array import to_numpy


class ProbsLinearization:
    def __init__(self, xp, inner):
        self.xp = xp
        self.inner = inner
        p = inner.logits
        tiny = float(xp.finfo(p.dtype).smallest_normal)
        self.live = p > tiny
        self.inv = xp.where(self.live, 1.0 / xp.where(self.live, p, xp.ones_like(p)), xp.zeros_like(p))
        self.logits = xp.log(xp.where(self.live, p, xp.full_like(p, tiny)))
        self.floored = np.sum(~to_numpy(self.live), axis=1)

    def __getattr__(self, name):  # costs and diagnostics of the wrapped linearization (FD step, noise...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _scale(self, a):
        return a * (self.inv if a.ndim == 2 else self.inv[:, None, :])

    def jvp(self, v):
        return self._scale(self.inner.jvp(v))

    def jvp_many(self, V, **options):  # options: a finite-difference step factor
        return self._scale(self.inner.jvp_many(V, **options))

    def vjp(self, u):
        return self.inner.vjp(self._scale(u))

    def vjp_many(self, U):
        return self.inner.vjp_many(self._scale(U))
