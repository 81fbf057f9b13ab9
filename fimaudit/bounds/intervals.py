r"""Interval bound propagation: for every tensor t of a graph, elementwise bounds
``lo ≤ t(x) ≤ hi`` that hold for every input x in a declared box ``low ≤ x ≤ high``.

Rules (Gowal et al., 2018, "On the effectiveness of interval bound propagation"; midpoint-
radius products after Rump, 1999, "Fast and parallel interval arithmetic"):

* monotone maps — ReLU-like activations, Sigmoid, Tanh, Erf, Exp, Sqrt, pooling by max and
  every data-movement op (Reshape, Transpose, Slice, Gather, Concat, Pad, …): the node applied
  to ``lo`` and to ``hi``;
* linear maps with constant weights (Conv, ConvTranspose, Gemm, MatMul, average pools,
  reductions, BatchNormalization): centre ``c = (lo + hi)/2`` and radius ``r = (hi − lo)/2``
  map to ``W c + b`` and ``|W| r``;
* elementwise arithmetic (Add, Sub, Mul, Div, Neg, Abs, Pow, Reciprocal): interval arithmetic
  (a quotient needs a divisor interval that excludes 0);
* MatMul of two activations ``A = Ac ± Ar``, ``B = Bc ± Br``:
  ``Ac Bc ± (|Ac| Br + Ar |Bc| + Ar Br)``;
* Softmax, LayerNormalization, GELU, LRN: the rules of :mod:`fimaudit.bounds.interval_rules`.

Bounds hold up to floating-point rounding; the propagation runs in float64.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOnnxOpError
from .finite import require_finite
from .interval_rules import gelu, layer_norm, lrn_interval, matmul_intervals, mul, power, reciprocal, softmax_interval
from .rules import attr

MONOTONE = {
    "Relu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Sigmoid",
    "Tanh",
    "Softplus",
    "HardSigmoid",
    "Clip",
    "Erf",
    "Exp",
    "Log",
    "Sqrt",
    "Identity",
    "Dropout",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Cast",
    "Slice",
    "Split",
    "Gather",
    "Concat",
    "Pad",
    "MaxPool",
    "Expand",
    "Tile",
    "ReduceMax",
    "ReduceMin",
}
LINEAR = {"Conv", "ConvTranspose", "Gemm", "MatMul", "AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum"}


class Domain:
    """Intervals of the tensors computed so far, and their values at the box's centre c,
    advanced node by node. Given a bound L_t on the Lipschitz constant of input → t on the
    box, ``advance`` also intersects t's interval with the mean-value box
    ``t(c) ± L_t ‖r‖₂`` (r the input box's radius): each coordinate of t moves by at most
    ‖t(x) − t(c)‖₂ ≤ L_t ‖x − c‖₂. That keeps intervals proportional to the box's size where
    plain interval arithmetic widens with every layer (dot products over many features)."""

    def __init__(self, graph, low, high):
        from ..errors import InvalidArgumentError

        shape = graph.shape(graph.input)
        try:
            lo = np.broadcast_to(np.asarray(low, dtype=np.float64), shape).copy()
            hi = np.broadcast_to(np.asarray(high, dtype=np.float64), shape).copy()
        except ValueError:
            raise InvalidArgumentError(
                f"input_domain bounds must be scalars or arrays of the input's shape {shape[1:]}, got shapes "
                f"{np.shape(low)} and {np.shape(high)}"
            ) from None
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(lo > hi):
            raise InvalidArgumentError("input_domain=(low, high) needs finite bounds with low ≤ high everywhere")
        self.graph = graph
        self.box = {graph.input: (lo, hi)}
        self.centre = {graph.input: (lo + hi) / 2}
        self.radius = float(np.linalg.norm((hi - lo) / 2))
        self.lipschitz = {graph.input: 1.0}

    def reach(self, name):
        """max ‖t(x) − t(c)‖₂ over the box, from t's Lipschitz bound (inf when unknown)."""
        return self.lipschitz.get(name, np.inf) * self.radius

    def advance(self, node, lipschitz=None):
        g = self.graph
        outs = _node(node, g, self.box, self)
        at_c = _run(node, g, {i: (self.centre[i] if i in self.centre else g.const(i)) for i in node.input if i})
        for name, iv, c in zip(node.output, outs, at_c):
            if not name:
                continue
            lo, hi = np.minimum(iv[0], iv[1]), np.maximum(iv[0], iv[1])
            c = np.asarray(c, dtype=np.float64)
            require_finite(lo, node, f"interval's lower end ({name!r})")
            require_finite(hi, node, f"interval's upper end ({name!r})")
            require_finite(c, node, f"value at the input box's centre ({name!r})")
            if lipschitz is not None and np.isfinite(lipschitz):
                self.lipschitz[name] = lipschitz
                reach = lipschitz * self.radius
                lo, hi = np.maximum(lo, c - reach), np.minimum(hi, c + reach)
            self.box[name], self.centre[name] = (lo, hi), c


def propagate(graph, low, high):
    """{tensor name: (lo, hi)} by interval arithmetic alone, for every tensor that depends on
    the graph input."""
    d = Domain(graph, low, high)
    for node in graph.nodes:
        if any(i in d.box for i in node.input) and not graph.folded(node):
            d.advance(node)
    return d.box


def operand(name, graph, box):
    """The interval of an input of a node: its box, or a constant as a point interval."""
    if name in box:
        return box[name]
    c = graph.const(name).astype(np.float64)
    return c, c


def _run(node, graph, feeds):
    from onnx.reference import ReferenceEvaluator

    from .graph import single

    feeds = {
        k: (np.asarray(v, dtype=np.float64) if np.issubdtype(np.asarray(v).dtype, np.floating) else v)
        for k, v in feeds.items()
        if k
    }  # the whole propagation runs in float64
    return ReferenceEvaluator(single(node, list(feeds.items()), graph.model)).run(None, feeds)


def _both(node, graph, box):
    """A monotone node on the lower and on the upper ends (constants fed as they are)."""

    def feeds(end):
        return {i: (box[i][end] if i in box else graph.const(i)) for i in node.input if i}

    return list(zip(_run(node, graph, feeds(0)), _run(node, graph, feeds(1))))


def _linear(node, graph, box):
    """Centre through the node, radius through |weights| with the bias dropped."""
    var = next(i for i in node.input if i in box)
    lo, hi = box[var]
    c, r = (lo + hi) / 2, (hi - lo) / 2
    op = node.op_type
    if op in ("MatMul", "Gemm") and sum(i in box for i in node.input[:2]) == 2:
        a, b = (operand(i, graph, box) for i in node.input[:2])
        bias = node.input[2] if op == "Gemm" and len(node.input) > 2 and node.input[2] else None
        return [matmul_intervals(node, a, b, None if bias is None else operand(bias, graph, box))]
    centre = _run(node, graph, {i: (c if i == var else graph.const(i)) for i in node.input if i})[0]
    absfeeds = {}
    for k, i in enumerate(node.input):
        if not i:
            continue
        if i == var:
            absfeeds[i] = r
        elif (op in ("Conv", "ConvTranspose") and k == 2) or (op == "Gemm" and k == 2):
            absfeeds[i] = np.zeros_like(graph.const(i))
        else:  # weights by magnitude; integer inputs (axes, shapes) as they are
            w = graph.const(i)
            absfeeds[i] = np.abs(w) if np.issubdtype(w.dtype, np.floating) else w
    if op == "Gemm":  # |alpha|, and the dropped C needs beta's sign no more
        node = _with_attrs(node, alpha=abs(attr(node, "alpha", 1.0)))
    radius = _run(node, graph, absfeeds)[0]
    return [(centre - radius, centre + radius)]


def _with_attrs(node, **attrs):
    import onnx

    new = onnx.NodeProto()
    new.CopyFrom(node)
    for name, value in attrs.items():
        for a in list(new.attribute):
            if a.name == name:
                new.attribute.remove(a)
        new.attribute.append(onnx.helper.make_attribute(name, value))
    return new


def _node(node, graph, box, domain=None):
    op = node.op_type
    var = [i for i in node.input if i in box]
    if op in MONOTONE:
        return _both(node, graph, box)
    if op in LINEAR:
        return _linear(node, graph, box)
    if op == "BatchNormalization":
        g, b, mean, v = (graph.const(i).astype(np.float64) for i in node.input[1:5])
        scale = g / np.sqrt(v + attr(node, "epsilon", 1e-5))
        shape = (-1,) + (1,) * (box[var[0]][0].ndim - 2)
        lo, hi = box[var[0]]
        a, c = scale.reshape(shape), (b - mean * scale).reshape(shape)
        return [(a * lo + c, a * hi + c)]
    if op in ("Add", "Sub", "Mul", "Div"):
        a, b = (operand(i, graph, box) for i in node.input[:2])
        if op == "Add":
            return [(a[0] + b[0], a[1] + b[1])]
        if op == "Sub":
            return [(a[0] - b[1], a[1] - b[0])]
        if op == "Div":
            b = reciprocal(b, node)
        return [mul(a, b)]
    if op == "Sum":
        ivs = [operand(i, graph, box) for i in node.input]
        return [(sum(i[0] for i in ivs), sum(i[1] for i in ivs))]
    if op == "Neg":
        lo, hi = box[var[0]]
        return [(-hi, -lo)]
    if op == "Abs":
        lo, hi = box[var[0]]
        return [(np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi))), np.maximum(-lo, hi))]
    if op == "Reciprocal":
        return [reciprocal(box[var[0]], node)]
    if op == "Pow":
        return [power(box[node.input[0]], float(graph.const(node.input[1])), node)]
    if op == "Softmax":
        return [softmax_interval(box[var[0]], attr(node, "axis", -1))]
    if op == "LayerNormalization":
        return layer_norm(node, graph, box, domain)
    if op == "Gelu":
        return [gelu(box[var[0]], attr(node, "approximate", "none"))]
    if op == "LRN":
        return [lrn_interval(box[var[0]], node)]
    raise UnsupportedOnnxOpError(f"no interval rule for ONNX op {op!r} (node {node.name!r})")
