r"""The linear nodes of a graph as maps of their one variable input: applied forward (with the
bias, or with every weight by magnitude and no bias, which carries an interval's radius:
``A(c ± r) ⊆ A c + b ± |A| r``), and applied as the adjoint to rows of a Jacobian
(``G ↦ G A`` and ``G ↦ G |A|``), which carries ∂z/∂(output) back to ∂z/∂(input).

Ops: Gemm and MatMul with a constant operand, Conv (1-D and 2-D, any stride, padding, dilation
and groups), BatchNormalization (inference form, a per-channel affine map), AveragePool,
GlobalAveragePool, ReduceMean/ReduceSum over non-batch axes, and Add/Sub/Mul/Div/Neg with a
constant. Tensors carry a leading axis of rows (1 forward, one per Jacobian row backward).

Reference: Gowal et al., 2018, "On the effectiveness of interval bound propagation"
(midpoint-radius form of an affine layer).
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOnnxOpError
from ..rules import attr
from . import grid

OPS = {
    "Gemm",
    "MatMul",
    "Conv",
    "BatchNormalization",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "ReduceSum",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
}


def _refuse(node, why):
    return UnsupportedOnnxOpError(
        f"{node.op_type} node {node.name!r} {why}: no local bound rule for it; the global lipschitz_bound still works"
    )


def unbroadcast(G, shape):
    """Sum the rows G (m, ...) over the axes a broadcast of an input of ``shape`` added."""
    extra = G.ndim - len(shape)
    if extra > 0:
        G = G.sum(axis=tuple(range(1, 1 + extra)))
    axes = tuple(a for a in range(1, len(shape)) if shape[a] == 1 and G.shape[a] != 1)
    return G.sum(axis=axes, keepdims=True) if axes else G


def _axes(node, graph, rank):
    axes = attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = graph.const(node.input[1]).tolist()
    lead = getattr(graph, "lead", 0)  # 1 when the rows are an axis of their own (:mod:`.layout`)
    if axes is None or len(axes) == 0:
        if attr(node, "noop_with_empty_axes", 0):
            return ()
        axes = range(rank - lead)
    axes = tuple(sorted(a % (rank - lead) + lead for a in axes))
    if 0 in axes:
        raise _refuse(node, "reduces over the batch axis")
    return axes


def _const(graph, name):
    return graph.const(name).astype(np.float64)


def _gemm_weight(node, graph):
    if attr(node, "transA", 0) or not graph.is_const(node.input[1]):
        raise _refuse(node, "multiplies two activations, or its activation operand is transposed")
    B = _const(graph, node.input[1])
    return (B.T if attr(node, "transB", 0) else B), attr(node, "alpha", 1.0)


def _bn(node, graph, rank):
    g, b, mean, v = (_const(graph, i) for i in node.input[1:5])
    a = g / np.sqrt(v + attr(node, "epsilon", 1e-5))
    shape = (1, -1) + (1,) * (rank - 2)
    return a.reshape(shape), (b - mean * a).reshape(shape)


def _var_const(node, graph, live):
    """(index of the variable input, constant operand as float64 or None)."""
    k = 0 if node.input[0] in live else 1
    other = node.input[1 - k] if len(node.input) > 1 else None
    return k, (_const(graph, other) if other else None)


def forward(node, graph, live, x, absolute=False):
    """The node applied to x (its variable input): A x + b, or |A| x when ``absolute``."""
    op = node.op_type
    ins, out = graph.shape(node.input[0]) if node.input[0] in live else None, graph.shape(node.output[0])
    mag = np.abs if absolute else (lambda w: w)
    if op == "Gemm":
        B, alpha = _gemm_weight(node, graph)
        y = (abs(alpha) if absolute else alpha) * (x @ mag(B))
        if not absolute and len(node.input) > 2 and node.input[2]:
            y = y + attr(node, "beta", 1.0) * _const(graph, node.input[2])
        return y
    if op == "MatMul":
        k, W = _var_const(node, graph, live)
        if W is None:
            raise _refuse(node, "multiplies two activations")
        return x @ mag(W) if k == 0 else mag(W) @ x
    if op == "Conv":
        W = _const(graph, node.input[1])
        y = grid.conv(x, mag(W), grid.geometry(node, ins, out, W.shape[2:]), attr(node, "group", 1), out[2:])
        if not absolute and len(node.input) > 2 and node.input[2]:
            y = y + _const(graph, node.input[2]).reshape(1, -1, *[1] * (y.ndim - 2))
        return y
    if op == "BatchNormalization":
        a, c = _bn(node, graph, x.ndim)
        return np.abs(a) * x if absolute else a * x + c
    if op == "AveragePool":
        geo = grid.geometry(node, ins, out, grid.kernel_of(node))
        return grid.sum_pool(x, geo, out[2:]) / grid.avg_divisor(node, ins, geo, out[2:])
    if op == "GlobalAveragePool":
        return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)
    if op in ("ReduceMean", "ReduceSum"):
        axes = _axes(node, graph, x.ndim)
        y = (np.mean if op == "ReduceMean" else np.sum)(x, axis=axes, keepdims=True)
        return y.reshape((x.shape[0], *out[1:]) if out[0] == 1 else out)  # rows first where the batch is
    if op == "Neg":
        return x if absolute else -x
    k, c = _var_const(node, graph, live)
    if c is None or x.ndim < c.ndim:
        raise _refuse(node, "has an operand the rule cannot place (two activations, or a constant of higher rank)")
    if op in ("Add", "Sub"):
        if absolute:
            return x + np.zeros_like(c)
        return x + c if op == "Add" else (x - c if k == 0 else c - x)
    if op == "Div" and k == 1:
        raise _refuse(node, "divides by an activation")
    s = c if op == "Mul" else 1.0 / c
    return x * mag(s)


def adjoint(node, graph, live, G, absolute=False):
    """Rows G (m, *output shape) carried to the node's variable input: G A, or G |A|."""
    op = node.op_type
    var = next(i for i in node.input if i in live)
    ins, out = graph.shape(var), graph.shape(node.output[0])
    mag = np.abs if absolute else (lambda w: w)
    m = G.shape[0]
    if op == "Gemm":
        B, alpha = _gemm_weight(node, graph)
        return (abs(alpha) if absolute else alpha) * (G @ mag(B).T)
    if op == "MatMul":
        k, W = _var_const(node, graph, live)
        R = G @ np.swapaxes(mag(W), -1, -2) if k == 0 else np.swapaxes(mag(W), -1, -2) @ G
        return unbroadcast(R, ins)
    if op == "Conv":
        W = _const(graph, node.input[1])
        geo = grid.geometry(node, ins, out, W.shape[2:])
        return grid.conv_adjoint(G, mag(W), geo, attr(node, "group", 1), ins[2:])
    if op == "BatchNormalization":
        return G * mag(_bn(node, graph, G.ndim)[0])
    if op == "AveragePool":
        geo = grid.geometry(node, ins, out, grid.kernel_of(node))
        return grid.sum_pool_adjoint(G / grid.avg_divisor(node, ins, geo, out[2:]), geo, ins[2:])
    if op == "GlobalAveragePool":
        return np.broadcast_to(G / float(np.prod(ins[2:])), (m, *ins[1:])).copy()
    if op in ("ReduceMean", "ReduceSum"):
        axes = _axes(node, graph, len(ins))
        keep = tuple(1 if a in axes else d for a, d in enumerate(ins))
        R = np.broadcast_to(G.reshape((m, *keep[1:])), (m, *ins[1:]))
        return R / float(np.prod([ins[a] for a in axes])) if op == "ReduceMean" else R.copy()
    if op == "Neg":
        return G if absolute else -G
    k, c = _var_const(node, graph, live)
    if op in ("Add", "Sub"):
        sign = -1.0 if (op == "Sub" and k == 1 and not absolute) else 1.0
        return unbroadcast(sign * G, ins)
    s = c if op == "Mul" else 1.0 / c
    return unbroadcast(G * mag(s), ins)
