r"""Nodes that move or combine values without weights: Reshape, Flatten, (Un)Squeeze,
Identity, Dropout (inference), Transpose, Gather and Slice with constant indices, Concat, and
sums of activations (Add, Sub, Sum).

Each acts on the full form ``(rows, *s)`` of its tensors (:mod:`.layout`), with its axes
shifted past the rows, so a move of the batch axis (of size 1) is an ordinary move. Forward
they act on a point, and on the two ends of an interval (Sub swaps the subtrahend's ends);
backward a row of a Jacobian is reshaped, transposed back, scattered back to the gathered or
sliced cells (zero elsewhere; a cell gathered twice gets the sum), split, or copied to every
summand (a tensor read by several nodes gets the sum of what each sends back: the chain rule
on a DAG).
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOnnxOpError
from ..rules import attr
from .layout import axis, full, held, unbroadcast

RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
SELECT = {"Gather", "Slice"}
COMBINE = {"Add", "Sub", "Sum", "Concat"}
OPS = RESHAPES | COMBINE | SELECT | {"Transpose"}


def check(node, graph, live):
    """Refuse gathers and slices whose indices depend on the input."""
    if node.op_type in SELECT and any(i in live for i in node.input[1:] if i):
        raise UnsupportedOnnxOpError(
            f"{node.op_type} node {node.name!r} has indices that depend on the input: no local bound rule for it; "
            "the global lipschitz_bound still works"
        )


def _perm(node, rank):
    return [0] + [p % rank + 1 for p in attr(node, "perm", list(range(rank))[::-1])]


def _gather(node, graph, rank):
    idx = graph.const(node.input[1]).astype(np.int64)
    return idx, axis(attr(node, "axis", 0), rank)


def _slices(node, graph, s):
    """The numpy index of a Slice on the full form (opset ≥ 10 inputs, or the older attributes)."""
    if len(node.input) > 1:
        get = [graph.const(i).astype(np.int64).tolist() if i else None for i in (list(node.input) + [""] * 5)[1:5]]
        starts, ends, axes, steps = get
    else:
        starts, ends, axes, steps = attr(node, "starts"), attr(node, "ends"), attr(node, "axes", None), None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    index = [slice(None)] * (len(s) + 1)
    for a, b, e, st in zip(axes, starts, ends, steps):
        index[axis(a, len(s))] = slice(b, e, st)
    return tuple(index)


def move(node, graph, x):
    """A one-input move applied to x (rows as the engine keeps them)."""
    v = node.input[0]
    X, s = full(x, graph, v), graph.shape(v)
    if node.op_type == "Transpose":
        X = np.transpose(X, _perm(node, len(s)))
    elif node.op_type == "Gather":
        idx, ax = _gather(node, graph, len(s))
        X = np.take(X, idx, axis=ax)
    elif node.op_type == "Slice":
        X = X[_slices(node, graph, s)]
    return held(X, graph, node.output[0])


def move_back(node, graph, G, var):
    """Rows G of ∂z/∂(output) carried to the move's input (the adjoint of the move)."""
    Gf, s, m = full(G, graph, node.output[0]), graph.shape(var), G.shape[0]
    if node.op_type == "Transpose":
        R = np.transpose(Gf, np.argsort(_perm(node, len(s))))
    elif node.op_type == "Gather":
        idx, ax = _gather(node, graph, len(s))
        R = np.zeros((m, *s))
        part = Gf.reshape(m, *s[: ax - 1], idx.size, *s[ax:])
        np.add.at(np.moveaxis(R, ax, 0), idx.reshape(-1) % s[ax - 1], np.moveaxis(part, ax, 0))
    elif node.op_type == "Slice":
        R = np.zeros((m, *s))
        R[_slices(node, graph, s)] = Gf
    else:
        R = Gf
    return held(R, graph, var)


def _value(name, graph, values, rank):
    if name in values:
        return full(values[name], graph, name, rank)
    c = graph.const(name).astype(np.float64)
    return c.reshape(1, *([1] * (rank - c.ndim)), *c.shape)


def combine(node, graph, point, lo, hi):
    """A Concat or a sum of several inputs, on the point value and on the interval's ends
    (dicts of the tensors computed so far; constants are point intervals)."""
    ins, out = [i for i in node.input if i], node.output[0]
    rank = len(graph.shape(out))
    p, a, b = ([_value(i, graph, d, rank) for i in ins] for d in (point, lo, hi))
    if node.op_type == "Concat":
        ax = axis(attr(node, "axis", 0), rank)
        return tuple(held(np.concatenate(v, axis=ax), graph, out) for v in (p, a, b))
    if node.op_type == "Sub":
        return tuple(held(v, graph, out) for v in (p[0] - p[1], a[0] - b[1], b[0] - a[1]))
    return tuple(held(sum(v), graph, out) for v in (p, a, b))


def combine_back(node, graph, G, live):
    """[(input name, rows)] for the variable inputs of a Concat or a sum."""
    ins, out = [i for i in node.input if i], node.output[0]
    Gf = full(G, graph, out)
    if node.op_type == "Concat":
        ax = axis(attr(node, "axis", 0), Gf.ndim - 1)
        sizes = [graph.shape(i)[ax - 1] for i in ins]
        parts = np.split(Gf, np.cumsum(sizes)[:-1], axis=ax)
        return [(i, held(part, graph, i)) for i, part in zip(ins, parts) if i in live]
    res = []
    for k, i in enumerate(ins):
        if i in live:
            sign = -1.0 if (node.op_type == "Sub" and k == 1) else 1.0
            res.append((i, unbroadcast(sign * Gf, graph, i)))
    return res


def combine_back_abs(node, graph, G, live):
    """The same for radii (nonnegative rows): Sub's sign is dropped."""
    return [(i, np.abs(g) if node.op_type == "Sub" else g) for i, g in combine_back(node, graph, G, live)]
