"""An ONNX graph prepared for bounding: one float input with concrete dimensions, every
tensor's static shape (:mod:`fimaudit.bounds.shapes`), the values of its constant subgraphs,
and the layer folds the rules use (BatchNormalization into a Conv, a standardisation into
the next linear layer).

Constant subgraphs are folded only after their outputs' sizes are known to fit the memory
limit (:func:`fimaudit.bounds.memory.fold_elements`), and a constant that holds NaN or inf is
remembered with the node that first made it, so the node that reads it can be refused by name.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError, InvalidModelFileError
from . import memory
from .finite import describe
from .rules import attr
from .shapes import concrete_shape, infer, known, require_float_input, resolve, set_input_shape, skeleton


class Graph:
    def __init__(self, proto, input_shape=None, memory_limit=memory.DEFAULT_LIMIT):
        from onnx import numpy_helper

        self.memory_limit = memory.check_limit(memory_limit)
        g = proto.graph
        inits = {t.name for t in g.initializer}
        inputs = [i for i in g.input if i.name not in inits]
        if len(inputs) != 1:
            raise InvalidArgumentError(f"the graph has {len(inputs)} inputs; bounds need exactly one")
        require_float_input(inputs[0])
        self.input = inputs[0].name
        shape = concrete_shape(inputs[0], input_shape)
        model = skeleton(proto)
        set_input_shape(model, self.input, (1, *shape[1:]))
        self.model, shapes = infer(model)
        self.nodes = list(g.node)
        self._consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.nonfinite = {
            k: f"initializer {k!r}"
            for k, v in self._consts.items()
            if v.dtype.kind in "fc" and not np.all(np.isfinite(v))
        }
        self._shapes = resolve(self.model, shapes, self._consts, self._fold)
        out = g.output[0].name
        producer = {o: n for n in self.nodes for o in n.output}
        self.softmax_skipped = out in producer and producer[out].op_type in ("Softmax", "LogSoftmax")
        self.output = producer[out].input[0] if self.softmax_skipped else out
        self._folds()

    def _fold(self, shapes, consts):
        """Evaluate nodes whose inputs are all constant (shapes, transposed weights...)."""
        from onnx.reference import ReferenceEvaluator

        for n in self.nodes:
            if not n.output or all(o in consts for o in n.output if o):
                continue
            if n.op_type == "Shape":
                s = shapes.get(n.input[0])
                if known(s):
                    start, end = attr(n, "start", 0), attr(n, "end", None)
                    consts[n.output[0]] = np.asarray(s[start:end], dtype=np.int64)
                continue
            if n.op_type != "Constant" and not (n.input and all((i == "" or i in consts) for i in n.input)):
                continue
            feeds = {i: consts[i] for i in n.input if i}
            elements = memory.fold_elements(n, feeds, shapes)
            if elements * 8 > self.memory_limit:
                memory.refuse(
                    f"the constant output {n.output[0]!r} of {describe(n)}",
                    shapes.get(n.output[0]) or (elements,),
                    elements * 8,
                    self.memory_limit,
                )
            try:
                with np.errstate(all="ignore"):  # NaN and inf are recorded below, and refused where read
                    outs = ReferenceEvaluator(single(n, list(feeds.items()), self.model)).run(None, feeds)
            except MemoryError:
                raise
            except Exception as err:  # the reference evaluator raises what numpy raises
                raise InvalidModelFileError(
                    f"{describe(n)} fails on its constant inputs: {str(err).splitlines()[0]}"
                ) from None
            bad = next((self.nonfinite[i] for i in feeds if i in self.nonfinite), None)
            for o, v in zip(n.output, outs):
                consts[o] = v
                if np.asarray(v).dtype.kind in "fc" and not np.all(np.isfinite(v)):
                    self.nonfinite[o] = bad or f"{describe(n)}, which makes NaN or inf from finite inputs"

    def _folds(self):
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
                    with np.errstate(all="ignore"):  # a NaN scale is refused where the Conv reads it
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
            shape = self.known_shape(t)
            if (
                not shape
                or len(shape) < 2
                or any(d != 1 for d in shape[:-1])
                or not self.is_const(lin.input[1])
                or (lin.op_type == "Gemm" and attr(lin, "transA", 0))
                or self.known_shape(n.output[0]) is None
            ):
                continue
            try:
                full = np.broadcast_to(s, self.known_shape(n.output[0])).reshape(-1)
            except ValueError:
                continue
            if full.size != shape[-1]:
                continue
            self.scale_fold[lin.output[0]] = full
            self.scale_folded.update(c.output[0] for c in chain)

    def _fold_channels(self, n, s, conv):
        """A per-input-channel scale (N, C, 1, 1 broadcast) before a Conv with a constant,
        ungrouped kernel: conv(s ⊙ x) is the conv with kernel W[:, c] s_c."""
        shape = self.known_shape(n.output[0])
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
        """The constant, finite elementwise factor of a Mul/Div of one activation, else None
        (a factor with NaN, inf or a zero divisor is left to the rule, which refuses it)."""
        if n.op_type not in ("Mul", "Div") or len(n.input) != 2:
            return None
        a, b = n.input
        if n.op_type == "Mul" and self.is_const(a) != self.is_const(b):
            c = self.const(a if self.is_const(a) else b).astype(np.float64)
        elif n.op_type == "Div" and self.is_const(b) and not self.is_const(a):
            d = self.const(b).astype(np.float64)
            if np.any(d == 0):
                return None
            c = 1.0 / d
        else:
            return None
        return c if np.all(np.isfinite(c)) else None

    def constant_bytes(self):
        return sum(np.asarray(v).nbytes for v in self._consts.values())

    def is_const(self, name):
        return name in self._consts

    def folded(self, node):
        """Whether every output of ``node`` is a constant (a constant subgraph, or a Shape of an
        activation), so it carries no dependence on the input."""
        return all(self.is_const(o) for o in node.output if o)

    def const(self, name):
        return np.asarray(self._consts[name])

    def known_shape(self, name):
        """The static shape of tensor ``name``, or None where shape inference left it unknown."""
        s = self._shapes.get(name)
        return s if known(s) else None

    def shape(self, name):
        s = self.known_shape(name)
        if s is None:
            raise InvalidModelFileError(
                f"ONNX shape inference leaves the shape of tensor {name!r} unknown ({self._shapes.get(name)}); "
                "a bound needs it: export the model with static shapes"
            )
        return s


def single(node, feeds, model):
    """A one-node model of ``node`` with ``feeds`` ([(name, array)]) as its inputs."""
    import onnx
    from onnx import helper

    ins = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), np.shape(v))
        for k, v in feeds
    ]
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output]
    g = helper.make_graph([node], "fold", ins, outs)
    return helper.make_model(g, opset_imports=model.opset_import, ir_version=model.ir_version)
