r"""The first-order (DeepFool-step) distance to the nearest decision boundary.

For an input x with natural parameters z(x) and predicted class y, each other class j has
the boundary ``z_y = z_j``. Linearizing ``g_j(x + δ) ≈ g_j(x) + ∇g_jᵀ δ`` with
``g_j = z_y − z_j``, the smallest ``‖δ‖₂`` that reaches ``g_j = 0`` is ``g_j / ‖∇g_j‖₂``, so

    d₁(x) = min_{j ≠ y} (z_y − z_j) / ‖∇ₓ(z_y − z_j)‖₂,

the step length of one DeepFool iteration (Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a
simple and accurate method to fool deep neural networks", CVPR 2016, eq. 6). The class j
attaining the minimum is reported with it. For a model linear in x (``z = W x + b``) d₁ is
the exact ℓ2 distance to the nearest pairwise boundary; for any other model it is an
estimate, not a bound: the boundary may be nearer or farther than the linearization says.

* categorical: any natural parameters whose differences are the logit differences work
  (``log p_y − log p_j = z_y − z_j``), so a model served as probabilities reads through log p;
* Bernoulli (independent labels): each label c flips at ``z_c = 0``, so
  ``d₁ = min_c |z_c| / ‖∇z_c‖₂`` and the class is the label c attaining it;
* Gaussian: a regression has no decision boundary: no distance (None).

A pair whose gradient difference is exactly zero never reaches its boundary in the
linearization: its distance is ``+inf`` (never NaN). Ties, and an input whose every pair is
``+inf``, are resolved toward the smaller gap (the runner-up class), then the lower index.

The Jacobian rows enter as they are, promoted to float64, and the gradient difference
``J_y − J_j`` is formed from them directly: no quantity scaled by the probabilities (like
``W = R J``) is inverted, so a saturated softmax (``p_y = 1 − 10⁻¹²``) loses nothing.
"""

from __future__ import annotations

import numpy as np

from ._array import device, promote, to_numpy

CHUNK_BYTES = 1 << 26  # float64 working arrays of the gradient differences formed at once
WORK = 24  # bytes per entry of a chunk those need: its float64 copy, the differences, their squares

__all__ = ["anchor", "gaps", "gradient_gaps", "pick", "from_jacobian", "per_row"]


def anchor(kind, z):
    """The class whose boundaries are measured, per input (numpy (n,)): the predicted class
    (arg-max) for a categorical model, None for the others (each label is its own pair)."""
    if kind != "categorical":
        return None
    return np.argmax(np.asarray(to_numpy(z), dtype=np.float64), axis=1)


def gaps(kind, z, y):
    """``g_j`` (numpy float64 (n, C)): ``z_y − z_j`` (categorical) or ``|z_c|`` (Bernoulli)."""
    z = np.asarray(to_numpy(z), dtype=np.float64)
    if kind == "categorical":
        return z[np.arange(len(z)), y][:, None] - z
    return np.abs(z)


def gradient_gaps(xp, kind, J, Jy=None):
    """``‖∇g_j‖₂`` for Jacobian rows J (n, k, d) of k classes: ``‖J_y − J_j‖`` with the anchor
    row Jy (n, d) (categorical) or ``‖J_c‖`` (Bernoulli); float64 (numpy (n, k))."""
    J = promote(xp, J)
    if kind == "categorical":
        J = promote(xp, Jy)[:, None, :] - J
    return np.asarray(to_numpy(xp.linalg.vector_norm(J, axis=-1)), dtype=np.float64)


def pick(gap, gnorm, y):
    """``(d₁, class)`` (numpy float64 (n,), int64 (n,)) from the gaps and their gradient norms
    (n, C); the anchor class y (categorical) is excluded."""
    n, C = gap.shape
    safe = np.where(gnorm > 0, gnorm, 1.0)
    ratio = np.where(gnorm > 0, gap / safe, np.inf)
    ratio = np.maximum(ratio, 0.0)  # z_y is the maximum: a negative gap is round-off
    if y is not None:
        ratio[np.arange(n), y] = np.inf
    # lexicographic: smallest ratio, then smallest gap, then lowest index; the anchor last
    last = np.zeros((n, C), bool) if y is None else np.arange(C)[None, :] == y[:, None]
    order = np.lexsort((np.broadcast_to(np.arange(C), (n, C)), gap, ratio, last), axis=1)
    cls = order[:, 0]
    return ratio[np.arange(n), cls], cls.astype(np.int64)


def from_jacobian(xp, kind, z, J, memory=CHUNK_BYTES):
    """``(d₁, class)`` for natural parameters z (n, C) and their full Jacobian J (n, C, d);
    ``(None, None)`` for a likelihood without decision boundaries (Gaussian). The classes go a
    chunk at a time, whose working arrays take at most ``memory`` bytes (and ``CHUNK_BYTES``),
    one class at a time at the least."""
    if kind not in ("categorical", "bernoulli"):
        return None, None
    y = anchor(kind, z)
    Jy = None
    if y is not None:
        onehot = np.zeros(tuple(z.shape), dtype=np.float64)
        onehot[np.arange(len(y)), y] = 1.0
        sel = xp.asarray(onehot, dtype=J.dtype, device=device(J))
        Jy = xp.matmul(sel[:, None, :], J)[:, 0, :]  # the row J_y: a product with 0s and one 1, exact
    n, C, d = (int(s) for s in J.shape)
    k = max(1, min(C, min(CHUNK_BYTES, int(memory)) // max(1, WORK * n * d)))
    norms = [gradient_gaps(xp, kind, J[:, lo : lo + k, :], Jy) for lo in range(0, C, k)]
    return pick(gaps(kind, z, y), np.concatenate(norms, axis=1), y)


def per_row(distance, cls, n):
    """The n inputs' distances and classes as Python floats and ints (audit rows); None for
    every input when there are none (a method other than exact, a Gaussian model) and for
    the inputs of a batch that took another method (NaN, class −1).

    >>> per_row(np.array([0.5, np.inf, np.nan]), np.array([2, 0, -1]), 3)
    ([0.5, inf, None], [2, 0, None])
    """
    if distance is None:
        return [None] * n, [None] * n
    d, k = np.asarray(to_numpy(distance), dtype=np.float64), np.asarray(cls)
    return [None if np.isnan(v) else float(v) for v in d], [None if c < 0 else int(c) for c in k]
