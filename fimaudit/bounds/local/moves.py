r"""Nodes that move or combine values without weights: Reshape, Flatten, (Un)Squeeze,
Identity, Dropout (inference), Transpose, Concat, and sums of activations (Add, Sub, Sum).

Forward they act on a point, and on the two ends of an interval (Sub swaps the subtrahend's
ends); backward a row of a Jacobian is reshaped, transposed back, split, or copied to every
summand (a tensor read by several nodes gets the sum of what each sends back: the chain rule
on a DAG).
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOnnxOpError
from ..rules import attr
from .linear import unbroadcast

RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
COMBINE = {"Add", "Sub", "Sum", "Concat"}
OPS = RESHAPES | COMBINE | {"Transpose"}


def _refuse(node, why):
    return UnsupportedOnnxOpError(
        f"{node.op_type} node {node.name!r} {why}: no local bound rule for it; the global lipschitz_bound still works"
    )


def check(node, graph, live):
    """Refuse moves that mix the batch axis with others (the rules keep rows on axis 0)."""
    var = [i for i in node.input if i in live]
    out = graph.shape(node.output[0])
    if node.op_type in RESHAPES and (graph.shape(var[0])[0] != 1 or out[0] != 1):
        raise _refuse(node, "moves the batch axis")
    if node.op_type == "Transpose" and list(attr(node, "perm", [0]))[0] != 0:
        raise _refuse(node, "moves the batch axis")
    if node.op_type == "Concat" and attr(node, "axis", 0) % len(out) == 0:
        raise _refuse(node, "concatenates along the batch axis")


def _perm(node, rank):
    return list(attr(node, "perm", list(range(rank))[::-1]))


def move(node, graph, x):
    """A one-input move applied to x (1, ...)."""
    if node.op_type == "Transpose":
        return np.transpose(x, _perm(node, x.ndim))
    return x.reshape(graph.shape(node.output[0]))


def move_back(node, graph, G, var):
    if node.op_type == "Transpose":
        return np.transpose(G, np.argsort(_perm(node, G.ndim)))
    return G.reshape((G.shape[0], *graph.shape(var)[1:]))


def _value(name, graph, values):
    return values[name] if name in values else graph.const(name).astype(np.float64)


def combine(node, graph, point, lo, hi):
    """A Concat or a sum of several inputs, on the point value and on the interval's ends
    (dicts of the tensors computed so far; constants are point intervals)."""
    ins = [i for i in node.input if i]
    p, a, b = ([_value(i, graph, d) for i in ins] for d in (point, lo, hi))
    if node.op_type == "Concat":
        ax = attr(node, "axis", 0) % graph.shape(node.output[0]).__len__()
        return tuple(np.concatenate(v, axis=ax) for v in (p, a, b))
    if node.op_type == "Sub":
        return p[0] - p[1], a[0] - b[1], b[0] - a[1]
    return sum(p), sum(a), sum(b)


def combine_back(node, graph, G, live):
    """[(input name, rows)] for the variable inputs of a Concat or a sum."""
    ins = [i for i in node.input if i]
    if node.op_type == "Concat":
        ax = attr(node, "axis", 0) % G.ndim
        sizes = [graph.shape(i)[ax] for i in ins]
        parts = np.split(G, np.cumsum(sizes)[:-1], axis=ax)
        return [(i, part) for i, part in zip(ins, parts) if i in live]
    out = []
    for k, i in enumerate(ins):
        if i in live:
            sign = -1.0 if (node.op_type == "Sub" and k == 1) else 1.0
            out.append((i, unbroadcast(sign * G, graph.shape(i))))
    return out


def combine_back_abs(node, graph, G, live):
    """The same for radii (nonnegative rows): Sub's sign is dropped."""
    return [(i, np.abs(g) if node.op_type == "Sub" else g) for i, g in combine_back(node, graph, G, live)]
