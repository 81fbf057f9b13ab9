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

Consequences (DESIGN.md §1): ``λ_max(F(x)) ≤ λ_max(M(x)) L² ≤ ½ L²`` (categorical) for
every x, and the top-1 class cannot change within ``margin(x) / (√2 L)`` of x, since each
logit difference ``z_i − z_j`` is ``√2 L``-Lipschitz. Bounds hold up to floating-point
rounding of the computed norms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._array import to_numpy
from ..errors import InvalidArgumentError, UnsupportedOnnxOpError
from ..likelihoods import get_likelihood
from .domain_rules import NEEDS_DOMAIN, TIGHTER_ON_DOMAIN, elementwise, matmul, need_domain, product
from .intervals import Domain
from .rules import attr, unary


class Graph:
    def __init__(self, proto, input_shape=None):
        import onnx
        from onnx import numpy_helper, shape_inference

        model = onnx.ModelProto()
        model.CopyFrom(proto)
        g = model.graph
        inits = {t.name for t in g.initializer}
        inputs = [i for i in g.input if i.name not in inits]
        if len(inputs) != 1:
            raise InvalidArgumentError(f"the graph has {len(inputs)} inputs; bounds need exactly one")
        dims = inputs[0].type.tensor_type.shape.dim
        concrete = [1] + list(input_shape or [d.dim_value or None for d in dims[1:]])
        if any(c is None for c in concrete):
            raise InvalidArgumentError(f"input {inputs[0].name!r} has symbolic dimensions: pass input_shape=(...)")
        for d, c in zip(dims, concrete):
            d.ClearField("dim_param")
            d.dim_value = int(c)
        model = shape_inference.infer_shapes(model, data_prop=True)
        g = model.graph
        self.model = model
        self.input = inputs[0].name
        self.nodes = list(g.node)
        self._consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self._shapes = {}
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            self._shapes[vi.name] = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        self._fold_constants(model)
        out = g.output[0].name
        producer = {o: n for n in self.nodes for o in n.output}
        self.softmax_skipped = out in producer and producer[out].op_type in ("Softmax", "LogSoftmax")
        self.output = producer[out].input[0] if self.softmax_skipped else out
        consumers = {}
        for n in self.nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        self.bn_fold, self.bn_folded = {}, set()  # keyed by output tensor (node names may be empty)
        for n in self.nodes:  # Conv → BatchNormalization with nothing else reading the Conv
            if n.op_type == "Conv" and len(consumers.get(n.output[0], [])) == 1:
                bn = consumers[n.output[0]][0]
                if bn.op_type == "BatchNormalization" and all(self.is_const(i) for i in bn.input[1:5]):
                    gam, _, _, var = (self.const(i) for i in bn.input[1:5])
                    scale = gam / np.sqrt(var + attr(bn, "epsilon", 1e-5))
                    self.bn_fold[n.output[0]] = scale.reshape(-1, *([1] * (self.const(n.input[1]).ndim - 1)))
                    self.bn_folded.add(bn.output[0])
        # Mul/Div by a constant (a standardisation layer) → Reshape/Flatten → Gemm/MatMul with a
        # constant weight, nothing else reading the chain: the composition is W·diag(s); or a
        # per-channel scale straight into a Conv: the kernel's input channels are rescaled
        self.scale_fold, self.scale_folded = {}, set()
        for n in self.nodes:
            s = self._feature_scale(n)
            if s is None:
                continue
            chain, t = [n], n.output[0]
            while (
                len(consumers.get(t, [])) == 1
                and t != self.output
                and consumers[t][0].op_type in ("Reshape", "Flatten")
            ):
                chain.append(consumers[t][0])
                t = chain[-1].output[0]
            nxt = consumers.get(t, [])
            if t == self.output or len(nxt) != 1 or nxt[0].input[0] != t:
                continue
            if nxt[0].op_type == "Conv" and len(chain) == 1:
                self._fold_channels(n, s, nxt[0])
                continue
            if nxt[0].op_type not in ("Gemm", "MatMul"):
                continue
            lin = nxt[0]
            shape = self._shapes.get(t)
            if (
                not shape
                or len(shape) < 2
                or any(d != 1 for d in shape[:-1])
                or not self.is_const(lin.input[1])
                or (lin.op_type == "Gemm" and attr(lin, "transA", 0))
            ):
                continue
            try:
                full = np.broadcast_to(s, self._shapes[n.output[0]]).reshape(-1)
            except (KeyError, ValueError):
                continue
            if full.size != shape[-1]:
                continue
            self.scale_fold[lin.output[0]] = full
            self.scale_folded.update(c.output[0] for c in chain)

    def _fold_channels(self, n, s, conv):
        """A per-input-channel scale (N, C, 1, 1 broadcast) before a Conv with a constant,
        ungrouped kernel: conv(s ⊙ x) is the conv with kernel W[:, c] s_c."""
        shape = self._shapes.get(n.output[0])
        if not shape or len(shape) < 3 or attr(conv, "group", 1) != 1 or not self.is_const(conv.input[1]):
            return
        try:
            full = np.broadcast_to(s, shape)[0]
        except ValueError:
            return
        per_channel = full.reshape(full.shape[0], -1)
        if not np.all(per_channel == per_channel[:, :1]):
            return  # varies inside a channel (per pixel): not a kernel rescaling
        self.scale_fold[conv.output[0]] = per_channel[:, 0]
        self.scale_folded.add(n.output[0])

    def _feature_scale(self, n):
        """The constant elementwise factor of a Mul/Div of one activation, else None."""
        if n.op_type not in ("Mul", "Div") or len(n.input) != 2:
            return None
        a, b = n.input
        if n.op_type == "Mul" and self.is_const(a) != self.is_const(b):
            c = self.const(a if self.is_const(a) else b)
        elif n.op_type == "Div" and self.is_const(b) and not self.is_const(a):
            c = 1.0 / self.const(b).astype(np.float64)
        else:
            return None
        return np.asarray(c, dtype=np.float64)

    def _fold_constants(self, model):
        """Evaluate nodes whose inputs are all constant (shapes, transposed weights...)."""
        from onnx.reference import ReferenceEvaluator

        for n in self.nodes:
            if n.op_type == "Constant":
                self._consts[n.output[0]] = ReferenceEvaluator(_single(n, [], model)).run(None, {})[0]
            elif n.op_type == "Shape" and n.input[0] in self._shapes:
                self._consts[n.output[0]] = np.asarray(self._shapes[n.input[0]], dtype=np.int64)
            elif n.input and all((i == "" or i in self._consts) for i in n.input):
                feeds = {i: self._consts[i] for i in n.input if i}
                outs = ReferenceEvaluator(_single(n, list(feeds.items()), model)).run(None, feeds)
                self._consts.update(dict(zip(n.output, outs)))

    def is_const(self, name):
        return name in self._consts

    def folded(self, node):
        """Whether every output of ``node`` is a constant (a constant subgraph, or a Shape of an
        activation), so it carries no dependence on the input."""
        return all(self.is_const(o) for o in node.output if o)

    def const(self, name):
        return np.asarray(self._consts[name])

    def shape(self, name):
        return self._shapes[name]


def _single(node, feeds, model):
    import onnx
    from onnx import helper

    ins = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), np.shape(v))
        for k, v in feeds
    ]
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output]
    g = helper.make_graph([node], "fold", ins, outs)
    return helper.make_model(g, opset_imports=model.opset_import, ir_version=model.ir_version)


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

    @property
    def fisher_bound(self):
        """λ_max(F(x)) ≤ sup λ_max(M) · L² for every x (½ L² for categorical)."""
        return get_likelihood(self.likelihood, self.sigma).metric_norm_bound() * self.lipschitz**2

    def fisher_bound_at(self, logits):
        """λ_max(F(x)) ≤ λ_max(M(x)) L² per input, from the logits (n, C)."""
        import array_api_compat.numpy as npx

        z = np.asarray(to_numpy(logits), dtype=np.float64)
        R = get_likelihood(self.likelihood, self.sigma).factor(npx, z).dense(z.shape[0], z.shape[1], z)
        return np.linalg.norm(R, ord=2, axis=(1, 2)) ** 2 * self.lipschitz**2  # λ_max(M) = ‖R‖² as M = RᵀR

    def certified_radius(self, logits):
        """ℓ2 radius around each input within which the top-1 class cannot change."""
        z = np.sort(np.asarray(to_numpy(logits), dtype=np.float64), axis=1)
        return (z[:, -1] - z[:, -2]) / (math.sqrt(2.0) * self.lipschitz)


def _proto(model):
    import onnx

    from .load import load_model

    if isinstance(model, (str, bytes, bytearray, onnx.ModelProto)) or hasattr(model, "__fspath__"):
        return load_model(model)
    for obj in (model, getattr(model, "inner", None)):
        if obj is not None and hasattr(obj, "to_onnx"):
            return load_model(obj.to_onnx())
        if obj is not None and hasattr(obj, "proto"):
            return load_model(obj.proto)
    raise InvalidArgumentError(
        f"cannot get an ONNX graph from {type(model).__name__}: pass an ONNX path or ModelProto, or a wrapped model "
        "whose adapter has to_onnx()"
    )


def lipschitz_bound(model, input_shape=None, likelihood="categorical", sigma=1.0, input_domain=None) -> LipschitzBound:
    """A certified upper bound on the ℓ2 Lipschitz constant of the logits of ``model``
    (an ONNX path, bytes, ModelProto, or a wrapped model with ``to_onnx()``).

    ``input_domain=(low, high)`` (scalars or arrays of the input's shape) bounds the model on
    that box only, which LayerNormalization, attention and other products of activations
    need (:mod:`fimaudit.bounds.domain_rules`); the statements then hold for inputs in the
    box, and a certified radius counts perturbations that stay in it."""
    g = Graph(_proto(model), input_shape or getattr(model, "input_shape", None))
    box = domain = None
    if input_domain is not None:
        if not (isinstance(input_domain, (tuple, list)) and len(input_domain) == 2):
            raise InvalidArgumentError(
                f"input_domain must be a pair (low, high) of scalars or arrays, got {type(input_domain).__name__}"
            )
        domain = Domain(g, *input_domain)
        box = domain.box
    L = {g.input: 1.0}
    layers = []
    for k, node in enumerate(g.nodes):
        var = [i for i in node.input if i in L]
        if not var or g.folded(node):
            continue
        op = node.op_type
        if op in ("Add", "Sum", "Sub") and len(var) > 1:
            local, out = None, sum(L[i] for i in var)
        elif op == "Concat":
            local, out = None, math.sqrt(sum(L[i] ** 2 for i in var))
        elif op in ("Mul", "Div") and (len(var) > 1 or node.input[1] in L):
            if box is None:
                raise need_domain(node, "multiplies two activations" if op == "Mul" else "divides by an activation")
            local, out = None, product(node, g, box, L)
        elif op in ("MatMul", "Gemm") and len(var) > 1:
            if box is None:
                raise need_domain(node, "multiplies two activations (attention)")
            local, out = None, matmul(node, g, box, L, domain)
        elif len(var) == 1:
            tighter = op in TIGHTER_ON_DOMAIN and box is not None
            local = (
                elementwise(node, g, var[0], box, domain) if op in NEEDS_DOMAIN or tighter else unary(node, g, var[0])
            )
            out = local * L[var[0]]
        else:
            raise UnsupportedOnnxOpError(
                f"{op} node {node.name!r} combines {len(var)} activations: no certified rule (not Lipschitz)"
            )
        for o in node.output:
            if o:
                L[o] = out
        if domain is not None:  # a folded node's L belongs to the fold, not to its own output
            folded = node.output[0] in g.bn_fold or node.output[0] in g.scale_folded
            domain.advance(node, None if folded else out)
        layers.append(dict(node=node.name or f"{op}_{k}", op=op, local=local, cumulative=out))
        if g.output in node.output:
            break
    if g.output not in L:
        raise InvalidArgumentError(f"the graph output {g.output!r} does not depend on its input")
    return LipschitzBound(L[g.output], layers, likelihood, sigma, g.softmax_skipped, input_domain, box)


def rank_models(models, **kw):
    """[(name, LipschitzBound)] sorted from the smallest certified L to the largest."""
    return sorted(((name, lipschitz_bound(m, **kw)) for name, m in models.items()), key=lambda t: t[1].lipschitz)
