"""Refusals of non-finite values in a bound, each naming the node and op that meet them.

A certified bound is a finite number computed from finite ones: a NaN or an infinity in a
constant a node reads, an interval, a value at the box's centre, a local or a cumulative
Lipschitz constant means the statement would be empty (or, for NaN, silently false after a
``max``), so it is refused with :class:`~fimaudit.errors.NonFiniteBoundError`; so is a
linear-algebra routine that fails (an SVD that does not converge), since it fails only on
non-finite or overflowing entries.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..errors import NonFiniteBoundError


def describe(node):
    """``Op node 'name'``, or ``Op node (output 't')`` for a node without a name."""
    if node.name:
        return f"{node.op_type} node {node.name!r}"
    return f"{node.op_type} node (output {next((o for o in node.output if o), '')!r})"


def _count(value):
    v = np.asarray(value)
    return int(np.isnan(v).sum()), int(np.isinf(v).sum()), v.size


def require_finite(value, node, what):
    """Refuse ``value`` (a number or an array) when any entry is NaN or infinite."""
    v = np.asarray(value)
    if v.dtype.kind in "fc" and not np.all(np.isfinite(v)):
        nan, inf, size = _count(v)
        raise NonFiniteBoundError(
            f"{describe(node)}: its {what} has {nan} NaN and {inf} infinite entries (of {size}), so no finite bound "
            "holds; the graph computes NaN or inf there (a division by zero, an overflow, or a NaN or inf weight)"
        )


def require_finite_constants(graph, node, variable):
    """Refuse a node that reads a constant holding NaN or inf (a NaN/inf initializer, or a
    folded constant such as a division by a constant 0)."""
    for i in node.input:
        if i and i not in variable and i in graph.nonfinite:
            raise NonFiniteBoundError(
                f"{describe(node)} reads the constant {i!r}, which holds NaN or inf values (from "
                f"{graph.nonfinite[i]}): every output of the node is NaN or inf there, so no finite bound holds. "
                "Fix the model's weights or the export"
            )


@contextmanager
def guarded(node):
    """Turn a failing linear-algebra routine, or a floating-point error, into a refusal
    that names ``node``."""
    try:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            yield
    except (np.linalg.LinAlgError, FloatingPointError) as err:
        raise NonFiniteBoundError(
            f"{describe(node)}: {err} on its values, which happens only with NaN, inf or overflowing entries; no "
            "finite bound holds"
        ) from None
