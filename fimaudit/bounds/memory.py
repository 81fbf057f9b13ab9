"""Memory a model's declared shapes commit fimaudit to, estimated before anything is allocated.

Every estimate counts bytes from static shapes and initializer headers only (``dims`` and
``data_type``, never the data), and every refusal names the largest tensor, its shape, its
bytes and the ``memory_limit=`` option that raises the limit:

* loading: the initializers as declared, external data included (:func:`initializers`);
* bounds (:func:`bound_cost`): the graph's constants as arrays, the working set of a Conv
  rule (its symbol for a chunk of DFT frequencies, :func:`fimaudit.bounds.convnorm.workspace`),
  and a float64 copy of each constant weight; on a declared input box also three float64 arrays (low, high, centre) for
  every tensor that depends on the input, kept together, plus a few transient copies for the
  node at hand (for a Conv, the im2col columns of the ONNX reference evaluator);
* constant folding (:func:`fold_elements`): the output of a constant node
  (``ConstantOfShape``, ``Expand``, ``Tile``, ``Range``, ``Pad``, ``Resize``, broadcasting);
* a forward pass at the declared batch (:func:`run_cost`): every activation at its dtype.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidModelFileError, MemoryLimitError
from .convnorm import workspace
from .finite import describe

GiB = 1 << 30
DEFAULT_LIMIT = 4 * GiB
INTERVAL_COPIES = 3  # low, high and centre of every tensor on an input box
TRANSIENT_COPIES = 8  # products, stacks and the reference evaluator's output for one node
IM2COL_BYTES = 40  # per im2col entry: two int64 index arrays, the float64 columns and a copy
ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2}


def check_limit(limit):
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0:
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError(f"memory_limit must be a positive number of bytes, got {limit!r}")
    return limit


def human(n):
    return f"{n / GiB:.3g} GiB" if n >= GiB / 10 else f"{n / (1 << 20):.3g} MiB"


def refuse(what, shape, nbytes, limit, total=None, where="lipschitz_bound(..., memory_limit=...)"):
    need = f"{human(total)} in all, " if total is not None and total > 1.05 * nbytes else ""
    raise MemoryLimitError(
        f"{what} of shape {tuple(shape)} needs {nbytes} bytes ({human(nbytes)}); {need}over memory_limit={limit} "
        f"({human(limit)}). Raise the limit with {where} if the machine has the memory"
    )


def count(shape):
    return math.prod(int(d) for d in shape)


def initializers(model, limit, where="lipschitz_bound(..., memory_limit=...)"):
    """Refuse negative dimensions, and initializers whose declared bytes exceed ``limit``."""
    total, largest = 0, None
    for t in model.graph.initializer:
        if any(d < 0 for d in t.dims):
            raise InvalidModelFileError(f"initializer {t.name!r} declares a negative dimension {tuple(t.dims)}")
        nbytes = count(t.dims) * ITEMSIZE.get(t.data_type, 8)
        total += nbytes
        if largest is None or nbytes > largest[1]:
            largest = (t, nbytes)
    if largest is not None and total > limit:
        refuse(f"initializer {largest[0].name!r}", largest[0].dims, largest[1], limit, total, where)
    return total


def fold_elements(node, values, shapes):
    """Elements the outputs of a constant node will hold, from its inputs' values."""
    outs = [shapes.get(o) for o in node.output if o]
    if outs and all(s is not None and None not in s for s in outs):
        return sum(count(s) for s in outs)
    op = node.op_type
    v = [values.get(i) if i else None for i in node.input]
    try:
        if op == "ConstantOfShape":
            dims = np.asarray(v[0]).reshape(-1) if v else []
            if np.any(dims < 0):
                raise InvalidModelFileError(f"{describe(node)} asks for the shape {tuple(dims)}")
            return count(dims)
        if op == "Expand":
            return count(np.broadcast_shapes(np.shape(v[0]), tuple(int(d) for d in np.asarray(v[1]).reshape(-1))))
        if op == "Tile":
            return count(s * int(r) for s, r in zip(np.shape(v[0]), np.asarray(v[1]).reshape(-1)))
        if op == "Range":
            start, limit, delta = (float(np.asarray(x)) for x in v[:3])
            return max(math.ceil((limit - start) / delta), 0) if delta else 0
        if op == "Pad" and len(v) > 1 and v[1] is not None:
            pads, shape = np.asarray(v[1]).reshape(-1), np.shape(v[0])
            return count(max(s + int(pads[k]) + int(pads[k + len(shape)]), 0) for k, s in enumerate(shape))
        if op in ("Resize", "Upsample") and len(v) > 1:
            sizes = v[3] if len(v) > 3 and v[3] is not None else None
            if sizes is not None:
                return count(np.asarray(sizes).reshape(-1))
            scales = next((x for x in v[1:3] if x is not None and np.size(x)), None)
            if scales is not None:
                return count(math.ceil(s * f) for s, f in zip(np.shape(v[0]), np.asarray(scales).reshape(-1)))
        shapes_in = [np.shape(x) for x in v if x is not None]
        return max([count(np.broadcast_shapes(*shapes_in))] + [count(s) for s in shapes_in]) if shapes_in else 1
    except (TypeError, ValueError, OverflowError):  # the shapes do not broadcast: the evaluator will say so
        return max((np.size(x) for x in v if x is not None), default=1)


def bound_cost(graph, with_domain):
    """(total bytes, largest part as (what, shape, bytes)) of bounding ``graph``."""
    depends = {graph.input}
    persistent, parts = graph.constant_bytes(), []
    for node in graph.nodes:
        if not any(i in depends for i in node.input) or graph.folded(node):
            continue
        depends.update(o for o in node.output if o)
        op = node.op_type
        if op in ("Conv", "ConvTranspose") and graph.is_const(node.input[1]):
            W = graph.const(node.input[1])
            side = node.output[0] if op == "ConvTranspose" else node.input[0]
            spatial = graph.known_shape(side)
            if spatial is not None and W.ndim >= 3:
                half, nbytes = workspace(W.shape, spatial[2:], _attr(node, "dilations"), _attr(node, "group") or 1)
                what = f"the DFT grid of {describe(node)} (kernel {tuple(W.shape)}; its frequencies and a chunk)"
                parts.append((what, (*W.shape[:2], *half), nbytes))
                out = graph.known_shape(node.output[0])
                if with_domain and out is not None:  # the reference evaluator's im2col columns
                    cols = ((W.shape[0] + W.shape[1]) * count(W.shape[2:]), max(count(spatial[2:]), count(out[2:])))
                    parts.append((f"the im2col columns of {describe(node)}", cols, IM2COL_BYTES * count(cols)))
        for i in node.input:
            if i and graph.is_const(i) and np.size(graph.const(i)) > 1:
                parts.append((f"constant {i!r} as float64", np.shape(graph.const(i)), 3 * 8 * np.size(graph.const(i))))
        if with_domain:
            for o in node.output:
                s = graph.known_shape(o) if o else None
                if s is not None:
                    persistent += INTERVAL_COPIES * 8 * count(s)
                    what = f"tensor {o!r} ({describe(node)}) as float64 intervals"
                    parts.append((what, s, (INTERVAL_COPIES + TRANSIENT_COPIES) * 8 * count(s)))
                    if op == "LayerNormalization" and s:
                        m = s[-1]
                        parts.append((f"the variance floor of {describe(node)}", (2 * m, m), 96 * m * m))
    if with_domain:
        s = graph.known_shape(graph.input)
        persistent += INTERVAL_COPIES * 8 * count(s)
    transient = max((p[2] for p in parts), default=0)
    largest = max(parts, key=lambda p: p[2], default=("the input", graph.known_shape(graph.input) or (), 0))
    return persistent + transient, largest


def check_bound(graph, with_domain, limit):
    total, (what, shape, nbytes) = bound_cost(graph, with_domain)
    if total > limit:
        refuse(what, shape, nbytes, limit, total)
    return total


def run_cost(model, shapes):
    """(bytes, largest (name, shape, bytes)) of the activations of one forward pass at the
    shapes given (initializers excluded: :func:`initializers` counts them)."""
    inits = {t.name for t in model.graph.initializer}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.value_info) + list(model.graph.output)}
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input})
    total, largest = 0, ("", (), 0)
    for name, s in shapes.items():
        if name in inits or s is None or None in s:
            continue
        nbytes = count(s) * ITEMSIZE.get(types.get(name, 1), 8)
        total += nbytes
        if nbytes > largest[2]:
            largest = (name, s, nbytes)
    return total, largest


def _attr(node, name):
    from .rules import attr

    return attr(node, name)
