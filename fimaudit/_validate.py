"""Checks at the boundary: every public function normalises its arguments here once."""

from __future__ import annotations

import numpy as np

from ._array import namespace, to_numpy
from .errors import EmptyBatchError, InputDtypeError, InputShapeError, InvalidArgumentError, NonFiniteOutputError


def as_batch(model, x):
    """Validate a batch for ``model``; returns (xp, x)."""
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    try:
        xp = namespace(x)
    except TypeError:
        raise InputDtypeError(f"x must be an array (numpy, torch or cupy), got {type(x).__name__}") from None
    if not xp.isdtype(x.dtype, "real floating"):
        raise InputDtypeError(
            f"x has dtype {x.dtype}; expected a real floating dtype (float32 or float64): "
            "cast it first, e.g. x.astype('float32')"
        )
    shape = tuple(x.shape)
    expected = model.input_shape
    if expected is not None and shape[1:] != expected:
        hint = " (a single input? add a batch axis: x[None])" if shape == expected else ""
        raise InputShapeError(
            f"x has shape {shape}; expected (n, {', '.join(map(str, expected))}) for this model{hint}"
        )
    if len(shape) < 1:
        raise InputShapeError("x is a scalar; expected a batch of shape (n, *input_shape)")
    if shape[0] == 0:
        raise EmptyBatchError("x is an empty batch (0 rows); pass at least one input")
    bad = ~xp.all(xp.isfinite(xp.reshape(x, (shape[0], -1))), axis=1)
    if bool(xp.any(bad)):
        idx = np.flatnonzero(to_numpy(bad))
        raise InvalidArgumentError(f"x has NaN or infinite entries in rows {_show(idx)}; clean or drop them first")
    return xp, x


def check_logits(xp, z, n, num_outputs, offset=0, what="logits"):
    if tuple(z.shape[:1]) != (n,) or z.ndim != 2:
        raise InvalidArgumentError(
            f"the model returned {what} of shape {tuple(z.shape)}; expected ({n}, C): "
            "the adapter's forward must return one row of outputs per input"
        )
    if num_outputs is not None and z.shape[1] != num_outputs:
        raise InvalidArgumentError(
            f"the model returned {z.shape[1]} outputs; it was declared with num_outputs={num_outputs}"
        )
    check_finite(xp, z, offset, what)


def check_finite(xp, a, offset=0, what="outputs", inputs=None):
    """Raise if a row of ``a`` is not finite. Row i belongs to input ``offset + i`` of the call,
    or to ``offset + inputs[i]`` when ``a`` holds only those inputs' rows."""
    bad = ~xp.all(xp.isfinite(xp.reshape(a, (a.shape[0], -1))), axis=1)
    if bool(xp.any(bad)):
        idx = np.flatnonzero(to_numpy(bad))
        idx = (idx if inputs is None else np.asarray(inputs)[idx]) + offset
        raise NonFiniteOutputError(
            f"the model returned non-finite {what} for inputs {_show(idx)}; check the model "
            "on those inputs (overflow in float16/bfloat16? a log of 0 inside the model?)",
            indices=idx.tolist(),
        )


def positive(name, value):
    if not (isinstance(value, (int, float, np.floating, np.integer)) and value > 0):
        raise InvalidArgumentError(f"{name} must be a positive number, got {value!r}")
    return value


def choice(name, value, options):
    if value not in options:
        raise InvalidArgumentError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def _show(idx, limit=10):
    idx = list(map(int, idx))
    return str(idx[:limit])[:-1] + (f", … ({len(idx)} in all)]" if len(idx) > limit else "]")
