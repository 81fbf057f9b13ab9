"""Static shapes of every tensor of an ONNX graph, before anything is computed on it.

The graph input gets concrete dimensions (batch 1 unless the graph fixes it), then ONNX shape
inference with data propagation runs. Exported graphs often compute reshape targets from
``Shape`` nodes through arithmetic that data propagation does not follow (``Div``, ``Cast``),
leaving some dimensions unknown; :func:`resolve` then folds the constant subgraphs (their
values, not only their shapes), writes the small integer results into the graph as
initializers and infers again, until nothing new is learnt. Unknown dimensions are ``None``,
never 0, so a ``Shape`` of a partly unknown tensor is never folded to a wrong constant.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputDtypeError, InputShapeError, InvalidModelFileError

FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}  # TensorProto codes
MAX_PASSES = 8  # each pass resolves at least one more level of computed reshape targets
SMALL_INT = 4096  # integer constants up to this size are written back as initializers


def dtype_name(elem_type):
    import onnx

    return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "undefined"


def require_float_input(value_info):
    """Refuse a graph input that is not floating point: the Fisher information and a
    Lipschitz constant are taken with respect to a continuous input."""
    t = value_info.type
    if not t.HasField("tensor_type"):
        raise InputDtypeError(f"graph input {value_info.name!r} is not a tensor: fimaudit needs one float tensor input")
    code = t.tensor_type.elem_type
    if code not in FLOAT_TYPES:
        raise InputDtypeError(
            f"graph input {value_info.name!r} has dtype {dtype_name(code)}: the Fisher information (and a Lipschitz "
            "bound) with respect to a discrete input is not defined. Audit a float input instead (for token ids, "
            "the embeddings' output)"
        )


def declared_dims(value_info):
    """The declared dimensions of a graph input: int, or None where symbolic or missing.
    Zero or negative declared sizes are refused."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for k, d in enumerate(t.shape.dim):
        if d.HasField("dim_value"):
            if d.dim_value <= 0:
                raise InvalidModelFileError(
                    f"graph input {value_info.name!r} declares dimension {k} as {d.dim_value}: sizes must be positive"
                )
            dims.append(int(d.dim_value))
        else:
            dims.append(None)
    return dims


def concrete_shape(value_info, input_shape=None):
    """The input's full shape: the graph's batch (1 when symbolic) and its other dimensions,
    or ``input_shape`` where given (which must agree with every fixed dimension)."""
    dims = declared_dims(value_info)
    name = value_info.name
    if dims is None or not dims:
        if input_shape is None:
            raise InvalidModelFileError(f"graph input {name!r} declares no shape: pass input_shape=(...)")
        dims = [None] * (len(input_shape) + 1)
    rest = dims[1:]
    if input_shape is not None:
        given = tuple(input_shape)
        if len(given) != len(rest):
            raise InputShapeError(
                f"input_shape={given} has {len(given)} dimensions; input {name!r} has {len(rest)} besides the batch"
            )
        for k, (g, s) in enumerate(zip(rest, given)):
            if not isinstance(s, (int, np.integer)) or s <= 0:
                raise InputShapeError(f"input_shape={given}: dimension {k} must be a positive integer, got {s!r}")
            if g is not None and g != s:
                raise InputShapeError(f"input_shape={given} does not match input {name!r}'s fixed shape {tuple(rest)}")
        rest = [int(s) for s in given]
    if any(d is None for d in rest):
        raise InvalidModelFileError(
            f"input {name!r} has symbolic dimensions {tuple(rest)} besides the batch: pass input_shape=(...)"
        )
    return (dims[0] or 1, *rest)


def set_input_shape(model, name, shape):
    """Write ``shape`` into the declared dimensions of graph input ``name`` (in place)."""
    vi = next(i for i in model.graph.input if i.name == name)
    t = vi.type.tensor_type
    t.ClearField("shape")
    for s in shape:
        t.shape.dim.add().dim_value = int(s)


def infer(model):
    """{tensor name: shape tuple, None for an unknown dimension} by ONNX shape inference."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:  # onnx raises InferenceError, RuntimeError or ValueError
        raise InvalidModelFileError(f"ONNX shape inference fails on the graph: {str(err).splitlines()[0]}") from None
    return inferred, read_shapes(inferred)


def read_shapes(model):
    shapes = {}
    g = model.graph
    for t in g.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            shapes[vi.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
    return shapes


def known(shape):
    """Whether every dimension of ``shape`` is known."""
    return shape is not None and all(d is not None for d in shape)


def skeleton(model, values=None):
    """A copy of ``model`` for shape inference: initializers over ``SMALL_INT`` elements that
    are not integers (weights, never shape arguments) become graph inputs of the same type
    and shape, so inference never copies the weights. ``values`` ({name: array}) replace the
    nodes that produce them by initializers. The graph's ``value_info`` and output shapes are
    dropped: ONNX inference keeps a declared shape that contradicts the computation, and a
    rule reading a wrong size (a pool's window count, a Conv's grid) would not be a bound."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.ir_version = model.ir_version
    out.opset_import.extend(model.opset_import)
    g, src = out.graph, model.graph
    g.name = src.name
    values = values or {}
    g.node.extend(n for n in src.node if not (n.output and all(o in values for o in n.output if o)))
    g.input.extend(src.input)
    for o in src.output:  # declared shapes of outputs and intermediates are not trusted: inferred afresh
        g.output.add().CopyFrom(o)
        g.output[-1].type.tensor_type.ClearField("shape")
    declared = {i.name for i in src.input}
    for t in src.initializer:
        count = int(np.prod(t.dims)) if len(t.dims) else 1
        if count > SMALL_INT and t.data_type not in _INT_TYPES:
            if t.name not in declared:
                g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            g.initializer.append(t)
    g.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in sorted(values.items()))
    return out


_INT_TYPES = {2, 3, 4, 5, 6, 7, 12, 13}  # uint8, int8, uint16, int16, int32, int64, uint32, uint64


def resolve(model, shapes, consts, fold):
    """Alternate ``fold(shapes, consts)`` (which adds the values of constant subgraphs to
    ``consts`` in place) with shape inference on the graph (a :func:`skeleton`) with the
    small integer values written in, until neither learns anything; returns the shapes."""
    produced = {o for n in model.graph.node for o in n.output}
    for _ in range(MAX_PASSES):
        count = len(consts)
        fold(shapes, consts)
        if len(consts) == count:
            break
        small = {
            k
            for k, v in consts.items()
            if k in produced and np.asarray(v).dtype.kind in "iu" and np.size(v) <= SMALL_INT
        }
        whole = {o for n in model.graph.node if n.output and all(o in small for o in n.output if o) for o in n.output}
        try:
            _, new = infer(skeleton(model, {k: consts[k] for k in whole if k}))
        except InvalidModelFileError:  # the written values confuse inference: keep what is known
            break
        better = {k: s for k, s in new.items() if known(s) and not known(shapes.get(k))}
        if not better:
            break
        shapes.update(better)
    return shapes
