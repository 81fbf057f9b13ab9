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
* Softmax: ``p_i ∈ [e^{lo_i} / (e^{lo_i} + Σ_{j≠i} e^{hi_j}), e^{hi_i} / (e^{hi_i} + Σ_{j≠i} e^{lo_j})]``;
* LayerNormalization: x̂ = (x − μ)/σ lies within ``x̂(c) ± ‖r‖₂ / σ_min`` (x̂ is
  (1/σ_min)-Lipschitz on the box, ``σ_min² = v_min + ε`` with ``v_min`` the least variance on
  the box, :func:`min_variance`), within the same form around the row's value at the input
  box's centre with the reach L ρ of :class:`Domain` (where σ ≥ σ(c) − Lρ/√m, often far
  above the box's floor), and within ``|x̂_i| ≤ min(√(m−1), max|x_i − μ| / σ_min)``; then
  scale and shift;
* GELU: decreasing below its minimiser and increasing above it (x* ≈ −0.7518, value −0.16997;
  −0.7525 and −0.17004 for the tanh approximation), so the ends bound it unless the interval
  straddles [−0.7525, −0.75], where −0.17005 is a lower bound for both forms.

Bounds hold up to floating-point rounding; the propagation runs in float64.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UnsupportedOnnxOpError
from .finite import require_finite
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
GELU_FLOOR = -0.17005  # below the minimum of both GELU forms


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
        return [_matmul_intervals(node, graph, box)]
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


def _matmul_intervals(node, graph, box):
    (alo, ahi), (blo, bhi) = (operand(i, graph, box) for i in node.input[:2])
    if node.op_type == "Gemm":
        if attr(node, "transA", 0):
            alo, ahi = alo.T, ahi.T
        if attr(node, "transB", 0):
            blo, bhi = blo.T, bhi.T
    ac, ar, bc, br = (alo + ahi) / 2, (ahi - alo) / 2, (blo + bhi) / 2, (bhi - blo) / 2
    centre = ac @ bc
    radius = np.abs(ac) @ br + ar @ np.abs(bc) + ar @ br
    if node.op_type == "Gemm":
        alpha = attr(node, "alpha", 1.0)
        centre, radius = alpha * centre, abs(alpha) * radius
        if len(node.input) > 2 and node.input[2]:
            clo, chi = operand(node.input[2], graph, box)
            beta = attr(node, "beta", 1.0)
            centre, radius = centre + beta * (clo + chi) / 2, radius + abs(beta) * (chi - clo) / 2
    return centre - radius, centre + radius


def _mul(a, b):
    p = np.stack(np.broadcast_arrays(a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]))
    return p.min(axis=0), p.max(axis=0)


def reciprocal(iv, node):
    lo, hi = iv
    if np.any((lo <= 0) & (hi >= 0)):
        raise UnsupportedOnnxOpError(
            f"{node.op_type} node {node.name!r} divides by an interval that contains 0 on the declared input domain: "
            "no finite bound; narrow input_domain"
        )
    return 1.0 / hi, 1.0 / lo


def _pow(iv, e, node):
    lo, hi = iv
    if e == 2.0:
        return np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(lo * lo, hi * hi)), np.maximum(lo * lo, hi * hi)
    if np.all(lo > 0):  # x^e is monotone on the positive axis
        return lo**e, hi**e
    raise UnsupportedOnnxOpError(
        f"Pow node {node.name!r} with exponent {e} on an interval that reaches 0 or below: no interval rule"
    )


def softmax_interval(iv, axis):
    lo, hi = iv
    shift = np.max(hi, axis=axis, keepdims=True)
    elo, ehi = np.exp(lo - shift), np.exp(hi - shift)
    slo, shi = elo.sum(axis=axis, keepdims=True), ehi.sum(axis=axis, keepdims=True)
    return elo / (elo + shi - ehi), ehi / (ehi + slo - elo)


def min_variance(lo, hi):
    """min over the box lo ≤ x ≤ hi of the population variance (1/m) Σ (x_i − x̄)², per row
    (last axis). The variance is min_c (1/m) Σ (x_i − c)², so its minimum over the box is
    min_c (1/m) Σ dist(c, [lo_i, hi_i])², a convex piecewise quadratic in c whose minimiser is
    a breakpoint or the stationary point of one piece: all are checked."""
    lo2, hi2 = lo.reshape(-1, lo.shape[-1]), hi.reshape(-1, hi.shape[-1])
    out = np.empty(lo2.shape[0])
    for k in range(lo2.shape[0]):
        a, b = lo2[k], hi2[k]
        pts = np.sort(np.concatenate([a, b]))  # at least 2 breakpoints
        # on a piece (between consecutive breakpoints) the set {i: c > b_i} and {i: c < a_i} is fixed
        mids = (pts[:-1] + pts[1:]) / 2
        above = mids[:, None] > b[None, :]
        below = mids[:, None] < a[None, :]
        num = (above * b).sum(1) + (below * a).sum(1)
        cnt = above.sum(1) + below.sum(1)
        stat = np.where(cnt > 0, num / np.maximum(cnt, 1), mids)
        stat = np.clip(stat, pts[:-1], pts[1:])
        cands = np.concatenate([pts, stat])
        d = np.maximum(a[None, :] - cands[:, None], 0) + np.maximum(cands[:, None] - b[None, :], 0)
        out[k] = np.min((d * d).mean(1))
    return out.reshape(lo.shape[:-1])


def layer_norm_rows(node, iv):
    """(lo, hi) reshaped to (rows, m), m the size of the normalised trailing axes."""
    lo, hi = iv
    m = math.prod(lo.shape[attr(node, "axis", -1) % lo.ndim :])
    return lo.reshape(-1, m), hi.reshape(-1, m)


def sigma_floor(node, iv, domain=None, name=None):
    """Per row, (σ_box, σ): lower bounds on √(var + ε) over the row's box, and over the box
    intersected with the ball ‖row(x) − row(c)‖ ≤ L ρ (L the tensor's Lipschitz bound, ρ the
    input box's radius): σ is (1/√m)-Lipschitz in the row, so σ(x) ≥ σ(c) − Lρ/√m there."""
    lo, hi = layer_norm_rows(node, iv)
    m = lo.shape[1]
    eps = attr(node, "epsilon", 1e-5)
    v = min_variance(lo, hi)
    box_floor = np.sqrt(v + eps)
    if domain is None or name not in domain.centre or not np.isfinite(domain.reach(name)):
        return box_floor, box_floor
    c = domain.centre[name].reshape(-1, m)
    ball = np.maximum(c.std(axis=1) - domain.reach(name) / math.sqrt(m), 0.0)
    return box_floor, np.sqrt(np.maximum(v, ball**2) + eps)


def _layer_norm(node, graph, box, domain=None):
    name = node.input[0]
    iv = box[name]
    lo, hi = layer_norm_rows(node, iv)
    m = lo.shape[1]
    eps = attr(node, "epsilon", 1e-5)
    s_box, s_all = (f[:, None] for f in sigma_floor(node, iv, domain, name))
    mu_lo, mu_hi = lo.mean(1, keepdims=True), hi.mean(1, keepdims=True)
    dev = np.maximum(np.abs(hi - mu_lo), np.abs(mu_hi - lo))
    xlo = xhi = np.minimum(math.sqrt(max(m - 1, 1)), dev / s_all)
    xlo = -xlo

    def around(c, reach, floor):  # mean-value form: x̂ is (1/floor)-Lipschitz on the segment
        at = (c - c.mean(1, keepdims=True)) / np.sqrt(c.var(1, keepdims=True) + eps)
        return at - reach / floor, at + reach / floor

    a, b = around((lo + hi) / 2, np.linalg.norm((hi - lo) / 2, axis=1, keepdims=True), s_box)
    xlo, xhi = np.maximum(xlo, a), np.minimum(xhi, b)
    if s_all is not s_box and domain is not None:
        a, b = around(domain.centre[name].reshape(-1, m), domain.reach(name), s_all)
        xlo, xhi = np.maximum(xlo, a), np.minimum(xhi, b)
    gamma = graph.const(node.input[1]).astype(np.float64) if len(node.input) > 1 and node.input[1] else 1.0
    beta = graph.const(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
    ylo, yhi = _mul((xlo.reshape(iv[0].shape), xhi.reshape(iv[0].shape)), (gamma, gamma))
    return [(ylo + beta, yhi + beta)]


def _gelu(iv, approximate):
    lo, hi = iv
    from scipy.special import erf

    def f(x):
        if approximate in (b"tanh", "tanh"):
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))

    straddle = (lo <= -0.75) & (hi >= -0.7525)
    return np.where(straddle, GELU_FLOOR, np.minimum(f(lo), f(hi))), np.maximum(f(lo), f(hi))


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
        return [_mul(a, b)]
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
        return [_pow(box[node.input[0]], float(graph.const(node.input[1])), node)]
    if op == "Softmax":
        return [softmax_interval(box[var[0]], attr(node, "axis", -1))]
    if op == "LayerNormalization":
        return _layer_norm(node, graph, box, domain)
    if op == "Gelu":
        return [_gelu(box[var[0]], attr(node, "approximate", "none"))]
    raise UnsupportedOnnxOpError(f"no interval rule for ONNX op {op!r} (node {node.name!r})")
