"""fisher_spectrum: the k largest eigenvalues of F(x) per input, from the C × C matrix
``B = R J Jᵀ Rᵀ`` (dense for ``exact``, Lanczos in output space otherwise); the vectors are
lifted to input space as ``Jᵀ Rᵀ u``. See :mod:`fimaudit.fisher` for the quantity."""

from __future__ import annotations

import numpy as np

from ._array import to_numpy
from ._assemble import assemble, batches, handle_nonconvergence
from ._operator import FisherOperator
from ._validate import choice, positive
from .blackbox import estimators as jvp_only
from .dispatch import DEFAULT_MEMORY, EXACT_MAX_OUTPUTS
from .errors import InvalidArgumentError
from .fisher import _iterative
from .ledger import QueryLedger
from .linalg import top_eigh
from .plugins import wrap
from .results import SpectrumResult

__all__ = ["fisher_spectrum"]


def fisher_spectrum(
    model,
    x,
    k=5,
    method="auto",
    tol=1e-4,
    seed=0,
    *,
    return_vectors=False,
    max_steps=None,
    batch_size=None,
    on_nonconvergence="raise",
    memory_limit=DEFAULT_MEMORY,
    progress=None,
) -> SpectrumResult:
    """The k largest eigenvalues of F(x) per input (descending), optionally with unit
    eigenvectors in input space. ``k`` may not exceed rank F (C − 1 for categorical,
    C otherwise, and at most d). ``progress``: a bar per batch and model-call round, None
    (default) when standard error is a terminal, True/False to force it (:mod:`fimaudit.progress`).

    >>> import numpy as np, fimaudit as fa
    >>> from fimaudit.testing import LinearModel
    >>> m = LinearModel(np.array([[1.0, 0.0], [0.0, 2.0]]))  # z = W x; at x = 0, p = (½, ½)
    >>> np.round(fa.fisher_spectrum(m, np.zeros((1, 2)), k=1).values, 12).tolist()
    [[1.25]]
    """
    positive("tol", tol)
    positive("k", k)
    choice("on_nonconvergence", on_nonconvergence, ("raise", "flag"))
    choice("method", method, ("auto", "exact", "lanczos"))
    k = int(k)
    parts, model = [], wrap(model)
    for xp, xb, lo, tracker in batches(model, x, batch_size, progress, "fisher_spectrum"):
        if not model.has_vjp and method == "lanczos":
            raise InvalidArgumentError("a jvp-only model's spectrum needs method='exact' (all d columns of J)")
        op = FisherOperator(model, xp, xb, offset=lo, ledger=QueryLedger(None, int(xb.shape[0]), meter=tracker))
        if k > op.rank:
            raise InvalidArgumentError(
                f"k={k} exceeds the largest possible rank of F, {op.rank} "
                f"({op.likelihood.name} likelihood, C={op.C} outputs, d={op.d} inputs): use k <= {op.rank}"
            )
        m = method if method != "auto" else ("exact" if op.C <= EXACT_MAX_OUTPUTS or not model.has_vjp else "lanczos")
        if m == "exact":
            B, W = jvp_only.gram(xp, op, memory_limit)[:2] if not model.has_vjp else op.gram(memory_limit)
            vals, vecs = top_eigh(xp, B, k)
            vals = op.cast(vals)
            part = dict(values=vals, residuals=xp.zeros_like(vals), converged=np.ones(op.n, bool), **op.first_order)
            U = xp.permute_dims(vecs, (0, 2, 1))
        else:
            res = _iterative(xp, op, "lanczos", k, tol, max_steps, seed)
            part = dict(values=res.values, residuals=res.residuals, converged=to_numpy(res.converged).astype(bool))
            part.update(first_order_distance=None, first_order_class=None)
            U, W = res.vectors, None
        part["vectors"] = op.lift(U, W) if return_vectors else None
        part["queries"] = op.queries
        parts.append((xp, part, m, op.likelihood.name))
    return handle_nonconvergence(assemble(SpectrumResult, parts), on_nonconvergence, "fisher_spectrum")
