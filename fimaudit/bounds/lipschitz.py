r"""A certified upper bound on the logit Lipschitz constant L of a model, from its ONNX graph.

For every tensor t the bound ``L(t)`` on the Lipschitz constant of the map graph input → t
is propagated in topological order: a node with one variable input multiplies by its own
constant (:mod:`fimaudit.bounds.rules`); ``Add``/``Sum``/``Sub`` of variable branches add
their constants (‖(f+g)(a) − (f+g)(b)‖ ≤ (L_f + L_g)‖a − b‖, residual blocks included);
``Concat`` takes ``√(Σ L_i²)`` (the parts are disjoint coordinates). A graph that ends in
a Softmax is bounded on the logits before it. Products of two activations, LayerNorm and the
like are bounded only on a declared input box (``input_domain``), where every tensor also
gets elementwise intervals (:mod:`fimaudit.bounds.intervals`) that the rules of
:mod:`fimaudit.bounds.domain_rules` use; the statements then hold for inputs in that box.

Consequences (docs/design.md): ``λ_max(F(x)) ≤ λ_max(M(x)) L² ≤ ½ L²`` (categorical) for
every x, and the top-1 class cannot change within ``margin(x) / (√2 L)`` of x, since each
logit difference ``z_i − z_j`` is ``√2 L``-Lipschitz. When the logits come out of a last
Gemm/MatMul (+ Add of a constant bias), ``z = W h(x) + b`` with h bounded by ``L_pen``, the
per-pair radius of :meth:`LipschitzBound.certified_radius` is tighter. Bounds hold up to
floating-point rounding of the computed norms.

Memory: before any interval, FFT grid or folded constant is allocated, its size is estimated
from static shapes (:mod:`fimaudit.bounds.memory`) and a graph over ``memory_limit`` is
refused with a ``MemoryLimitError`` naming the tensor, its shape and bytes.
Non-finite values: a NaN or inf in any constant a node reads, interval, centre value, local
or cumulative constant, or a failing SVD, raises ``NonFiniteBoundError`` naming the node and
its op (:mod:`fimaudit.bounds.finite`), so a returned bound is always a finite number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._array import to_numpy
from ..errors import InvalidArgumentError, NonFiniteOutputError, UnsupportedOnnxOpError
from ..likelihoods import get_likelihood
from . import memory
from .domain_rules import NEEDS_DOMAIN, TIGHTER_ON_DOMAIN, elementwise, matmul, need_domain, product
from .finite import guarded, require_finite, require_finite_constants
from .graph import Graph
from .intervals import Domain
from .rules import attr, unary


@dataclass
class LipschitzBound:
    """Certified bounds derived from a graph (see the module docstring)."""

    lipschitz: float
    layers: list = field(default_factory=list)  # per node: name, op, local constant, cumulative
    likelihood: str = "categorical"
    sigma: float = 1.0
    softmax_skipped: bool = False
    input_domain: tuple | None = None  # the box the bound holds on (None: everywhere)
    intervals: dict | None = field(default=None, repr=False)  # tensor name → (lo, hi) on that box
    penultimate: float | None = None  # L_pen: the bound up to the input h of a linear last layer, if any
    head: np.ndarray | None = field(default=None, repr=False)  # that layer's weights W (C × h): z = W h + b

    @property
    def fisher_bound(self):
        """λ_max(F(x)) ≤ sup λ_max(M) · L² for every x (½ L² for categorical)."""
        return get_likelihood(self.likelihood, self.sigma).metric_norm_bound() * self.lipschitz**2

    def fisher_bound_at(self, logits):
        """λ_max(F(x)) ≤ λ_max(M(x)) L² per input, from the logits (n, C)."""
        import array_api_compat.numpy as npx

        z = np.asarray(to_numpy(logits), dtype=np.float64)
        bad = ~np.all(np.isfinite(z.reshape(len(z), -1)), axis=1) if z.ndim else np.array([False])
        if np.any(bad):
            rows = np.flatnonzero(bad)
            raise NonFiniteOutputError(
                f"the logits hold NaN or inf in rows {rows.tolist()}: no Fisher bound there", rows
            )
        R = get_likelihood(self.likelihood, self.sigma).factor(npx, z).dense(z.shape[0], z.shape[1], z)
        return np.linalg.norm(R, ord=2, axis=(1, 2)) ** 2 * self.lipschitz**2  # λ_max(M) = ‖R‖² as M = RᵀR

    def certified_radius(self, logits):
        r"""ℓ2 radius around each input within which the top-1 class cannot change.

        Always ``margin / (√2 L)``. With a linear last layer ``z = W h(x) + b`` (``head``) and
        ``h`` ``L_pen``-Lipschitz (``penultimate``), also the per-pair radius

            r(x) = min_{j ≠ y} (z_y − z_j) / (‖w_y − w_j‖₂ · L_pen),

        and the larger of the two is returned. Proof: for ‖x' − x‖ < r(x) and every j ≠ y,
        ``z_y(x') − z_j(x') = (w_y − w_j)ᵀ h(x') + b_y − b_j
        ≥ z_y(x) − z_j(x) − ‖w_y − w_j‖ ‖h(x') − h(x)‖ (Cauchy–Schwarz)
        ≥ z_y(x) − z_j(x) − ‖w_y − w_j‖ L_pen ‖x' − x‖ > 0``, so y stays the arg-max; a pair
        with ``w_y = w_j`` never changes order (its term is +inf). The per-pair radius is never
        smaller: the cumulative bound is ``L = ‖W‖₂ L_pen`` and ``‖w_y − w_j‖ = ‖Wᵀ(e_y − e_j)‖
        ≤ √2 ‖W‖₂``, while ``z_y − z_j ≥ margin``.
        """
        z = np.asarray(to_numpy(logits), dtype=np.float64)
        top2 = np.sort(z, axis=1)
        radius = (top2[:, -1] - top2[:, -2]) / (math.sqrt(2.0) * self.lipschitz)
        if self.head is None or self.penultimate is None or z.shape[1] != self.head.shape[0]:
            return radius
        W, y = np.asarray(self.head, dtype=np.float64), np.argmax(z, axis=1)
        pair = np.empty_like(radius)
        for c in np.unique(y):  # one row of pairwise weight distances per predicted class
            rows = np.flatnonzero(y == c)
            dw = np.linalg.norm(W[c][None, :] - W, axis=1) * self.penultimate  # (C,)
            gap = z[rows, c][:, None] - z[rows]  # (m, C)
            ratio = np.where(dw[None, :] > 0, gap / np.where(dw > 0, dw, 1.0)[None, :], np.inf)
            ratio[:, c] = np.inf
            pair[rows] = ratio.min(axis=1)
        return np.maximum(radius, pair)


def _head(g, L):
    """``(L_pen, W)`` when the logits are ``W h + b`` out of a last Gemm/MatMul with a constant
    2-D weight (and an Add of a constant after a MatMul); else None. A standardisation scale
    folded into that layer (:mod:`fimaudit.bounds.graph`) is folded into W as the bound did."""
    producer = {o: n for n in g.nodes for o in n.output}
    node = producer.get(g.output)
    if node is not None and node.op_type == "Add":
        var = [i for i in node.input if i in L]
        if len(var) != 1 or not all(g.is_const(i) for i in node.input if i != var[0]):
            return None
        node = producer.get(var[0])
        if node is None or node.op_type != "MatMul":
            return None
    if node is None or node.op_type not in ("Gemm", "MatMul") or node.input[0] not in L:
        return None
    if len(node.input) < 2 or not g.is_const(node.input[1]) or (len(node.input) > 2 and node.input[2] in L):
        return None
    shape, B = g.known_shape(node.input[0]), g.const(node.input[1]).astype(np.float64)
    trans_b = node.op_type == "Gemm" and attr(node, "transB", 0)
    if B.ndim != 2 or shape is None or len(shape) != 2 or (node.op_type == "Gemm" and attr(node, "transA", 0)):
        return None
    scale = g.scale_fold.get(node.output[0])
    if scale is not None:
        B = B * scale[None, :] if trans_b else scale[:, None] * B
    alpha = attr(node, "alpha", 1.0) if node.op_type == "Gemm" else 1.0
    return L[node.input[0]], alpha * (B if trans_b else B.T)  # W (C × h)


def _proto(model, memory_limit=memory.DEFAULT_LIMIT):
    import onnx

    from .load import load_model

    if isinstance(model, (str, bytes, bytearray, onnx.ModelProto)) or hasattr(model, "__fspath__"):
        return load_model(model, memory_limit=memory_limit)
    for obj in (model, getattr(model, "inner", None)):
        if obj is not None and hasattr(obj, "to_onnx"):
            return load_model(obj.to_onnx(), memory_limit=memory_limit)
        if obj is not None and hasattr(obj, "proto"):
            return load_model(obj.proto, memory_limit=memory_limit)
    raise InvalidArgumentError(
        f"cannot get an ONNX graph from {type(model).__name__}: pass an ONNX path or ModelProto, or a wrapped model "
        "whose adapter has to_onnx()"
    )


def lipschitz_bound(
    model,
    input_shape=None,
    likelihood="categorical",
    sigma=1.0,
    input_domain=None,
    memory_limit=memory.DEFAULT_LIMIT,
) -> LipschitzBound:
    """A certified upper bound on the ℓ2 Lipschitz constant of the logits of ``model``
    (an ONNX path, bytes, ModelProto, or a wrapped model with ``to_onnx()``).

    ``input_domain=(low, high)`` (scalars or arrays of the input's shape) bounds the model on
    that box only, which LayerNormalization, attention and other products of activations
    need (:mod:`fimaudit.bounds.domain_rules`); the statements then hold for inputs in the
    box, and a certified radius counts perturbations that stay in it. ``memory_limit``
    (bytes) caps what loading and bounding may allocate, checked before allocating.

    >>> import numpy as np, onnx
    >>> from onnx import helper, numpy_helper
    >>> W = numpy_helper.from_array(np.diag([1.0, 2.0]).astype(np.float32), "W")
    >>> io = [helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, ["n", 2]) for v in "xz"]
    >>> g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["z"])], "g", io[:1], io[1:], [W])
    >>> b = lipschitz_bound(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    >>> round(b.lipschitz, 6), round(b.fisher_bound, 6)  # ‖W‖₂ = 2, and ½ L² = 2
    (2.0, 2.0)
    """
    memory.check_limit(memory_limit)
    g = Graph(_proto(model, memory_limit), input_shape or getattr(model, "input_shape", None), memory_limit)
    box = domain = None
    if input_domain is not None:
        if not (isinstance(input_domain, (tuple, list)) and len(input_domain) == 2):
            raise InvalidArgumentError(
                f"input_domain must be a pair (low, high) of scalars or arrays, got {type(input_domain).__name__}"
            )
    memory.check_bound(g, input_domain is not None, memory_limit)
    if input_domain is not None:
        domain = Domain(g, *input_domain)
        box = domain.box
    L = {g.input: 1.0}
    layers = []
    for k, node in enumerate(g.nodes):
        var = [i for i in node.input if i in L]
        if not var or g.folded(node):
            continue
        require_finite_constants(g, node, L)
        with guarded(node):
            local, out = _compose(node, g, var, L, box, domain)
            if local is not None:
                require_finite(local, node, "local Lipschitz constant")
            require_finite(out, node, "cumulative Lipschitz constant")
            for o in node.output:
                if o:
                    L[o] = out
            if domain is not None:  # a folded node's L belongs to the fold, not to its own output
                folded = node.output[0] in g.bn_fold or node.output[0] in g.scale_folded
                domain.advance(node, None if folded else out)
        layers.append(dict(node=node.name or f"{node.op_type}_{k}", op=node.op_type, local=local, cumulative=out))
        if g.output in node.output:
            break
    if g.output not in L:
        raise InvalidArgumentError(f"the graph output {g.output!r} does not depend on its input")
    head = _head(g, L)
    pen, W = head if head is not None else (None, None)
    return LipschitzBound(L[g.output], layers, likelihood, sigma, g.softmax_skipped, input_domain, box, pen, W)


def _compose(node, g, var, L, box, domain):
    """(local constant or None, L of the node's outputs) for a node with variable inputs ``var``."""
    op = node.op_type
    if op in ("Add", "Sum", "Sub") and len(var) > 1:
        return None, sum(L[i] for i in var)
    if op == "Concat":
        return None, math.sqrt(sum(L[i] ** 2 for i in var))
    if op in ("Mul", "Div") and (len(var) > 1 or node.input[1] in L):
        if box is None:
            raise need_domain(node, "multiplies two activations" if op == "Mul" else "divides by an activation")
        return None, product(node, g, box, L)
    if op in ("MatMul", "Gemm") and len(var) > 1:
        if box is None:
            raise need_domain(node, "multiplies two activations (attention)")
        return None, matmul(node, g, box, L, domain)
    if len(var) == 1:
        tighter = op in TIGHTER_ON_DOMAIN and box is not None
        local = elementwise(node, g, var[0], box, domain) if op in NEEDS_DOMAIN or tighter else unary(node, g, var[0])
        return local, local * L[var[0]]
    raise UnsupportedOnnxOpError(
        f"{op} node {node.name!r} combines {len(var)} activations: no certified rule (not Lipschitz)"
    )


def rank_models(models, **kw):
    """[(name, LipschitzBound)] sorted from the smallest certified L to the largest."""
    return sorted(((name, lipschitz_bound(m, **kw)) for name, m in models.items()), key=lambda t: t[1].lipschitz)
