"""Batches in, one result out: the bookkeeping the estimators share.

``batches`` cuts x into the batches ``batch_size`` asks for (each is one estimator call's
ledger) and reports them to the call's progress tracker, ``assemble`` joins the per-batch
parts into one typed result, and ``handle_nonconvergence`` applies the ``on_nonconvergence``
policy.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._array import device
from ._validate import as_batch, positive
from .errors import NotConvergedError, NotConvergedWarning
from .hints import first_input, say
from .progress import tracking

__all__ = ["batches", "assemble", "handle_nonconvergence"]


def batches(model, x, batch_size, progress=False, desc=""):
    """(xp, batch, offset, tracker) for the batches of x; ``model`` already wrapped.
    ``progress`` as :func:`fimaudit.progress.tracking` takes it: the tracker counts each batch
    once the caller has finished it and its bar (if any) closes when the last one is done,
    before the caller's closing warnings."""
    xp, x = as_batch(model, x)
    n = int(x.shape[0])
    bs = n if batch_size is None else int(positive("batch_size", batch_size))
    with tracking(progress, desc) as tracker:
        tracker.start(n)
        for lo in range(0, n, bs):
            yield xp, x[lo : min(n, lo + bs), ...], lo, tracker
            tracker.advance(min(n, lo + bs) - lo)


def _fill(xp, like, n):
    """A stand-in for a batch whose method has no such field: NaN, −1 for integers, False for flags."""
    shape = (n, *like.shape[1:])
    if isinstance(like, np.ndarray):
        return np.full(shape, {"i": -1, "u": 0, "b": False}.get(like.dtype.kind, np.nan), like.dtype)
    return xp.full(shape, float("nan"), dtype=like.dtype, device=device(like))


def assemble(cls, parts):
    """One result from per-batch parts. A field that only some batches have (``auto`` chose
    different methods for different batches) is NaN there, −1 for integer fields, False for flags."""
    xp = parts[0][0]
    methods = sorted({p[2] for p in parts})
    out = {}
    for key in dict.fromkeys(k for p in parts for k in p[1]):  # every batch's fields, first seen first
        vals = [p[1].get(key) for p in parts]
        like = next((v for v in vals if v is not None), None)
        if like is not None and hasattr(like, "shape") and getattr(like, "ndim", 0) > 0:
            vals = [_fill(xp, like, int(p[1]["queries"].shape[0])) if v is None else v for v, p in zip(vals, parts)]
        if vals[0] is None:
            out[key] = None
        elif isinstance(vals[0], np.ndarray):
            out[key] = np.concatenate(vals)
        else:
            out[key] = vals[0] if len(vals) == 1 else xp.concat(vals, axis=0)
    return cls(method="+".join(methods), likelihood=parts[0][3], **out)


def handle_nonconvergence(result, policy, what):
    if result.converged is None or bool(np.all(result.converged)):
        return result
    bad = np.flatnonzero(~result.converged) + first_input()
    msg = (
        f"{what} did not converge for {len(bad)} of {len(result.converged)} inputs "
        f"(rows {bad[:10].tolist()}{'…' if len(bad) > 10 else ''}); their brackets "
        f"[lower, upper] still hold: raise {say('max_steps')} or {say('budget')}, or loosen {say('tol')}"
    )
    if policy == "raise":
        raise NotConvergedError(msg + "; the partial result is in .partial", partial=result)
    warnings.warn(msg, NotConvergedWarning, stacklevel=3)
    return result
