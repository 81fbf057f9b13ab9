r"""Hutchinson's trace estimator with a standard error.

For a symmetric A and probes v with E[v vᵀ] = I (Rademacher ±1 entries here),
``tr A = E[vᵀ A v]``. With k independent probes the estimate is the sample mean of
``vᵀ A v`` and its standard error is the sample standard deviation over √k; for
Rademacher probes ``Var[vᵀAv] = 2(‖A‖_F² − Σ A_ii²)``.

For the Fisher, ``vᵀ F v = ‖R J v‖²`` needs one Jacobian–vector product per probe and
no vector–Jacobian product, so it also serves black-box models.
Reference: Hutchinson, Comm. Statist. Simulation Comput. 19 (1990) 433–450.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._array import rademacher


@dataclass
class TraceEstimate:
    value: object  # (n,)
    stderr: object  # (n,)
    products: int  # operator applications per input


def hutchinson(xp, quadratic, like, dim: int, k: int, seed: int) -> TraceEstimate:
    """Estimate tr A for n operators from ``quadratic(V) -> (n, k)`` values ``vᵢᵀ A vᵢ``.

    ``V`` has shape (n, k, dim); ``like`` fixes library, dtype and device.
    """
    n = like.shape[0]
    V = rademacher(xp, like, (n, k, dim), seed)
    q = quadratic(V)
    mean = xp.mean(q, axis=-1)
    if k > 1:
        stderr = xp.std(q, axis=-1, correction=1) / math.sqrt(k)
    else:
        stderr = xp.full_like(mean, float("inf"))
    return TraceEstimate(mean, stderr, k)
