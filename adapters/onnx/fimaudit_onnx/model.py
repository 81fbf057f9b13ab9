"""An ONNX model as a forward-only fimaudit model, run by onnxruntime.

Loading is defensive: a size cap, external data read only from inside the model's own
folder, the ONNX checker, and one floating-point graph input whose non-batch dimensions are
known (or given as ``input_shape``). Garbage or truncated files raise
``InvalidModelFileError`` naming the file. Before a session is created, the bytes of the
initializers and of every activation of one forward pass at the session's batch (1 row when
the batch is symbolic) are estimated from static shapes, and a model over ``memory_limit``
is refused by name. A graph whose output comes from a final Softmax is audited on
the logits before it (added as a graph output), since log-softmax of probabilities
underflows where the logits do not. Batches follow the session's batch dimension: a
fixed batch of b means chunks of exactly b rows (the last one padded), so a model
exported with batch 1 costs one session call per row.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
import onnxruntime as ort

from fimaudit.blackbox import CallableModel
from fimaudit.bounds import memory
from fimaudit.bounds.load import load_model
from fimaudit.bounds.shapes import concrete_shape, dtype_name, infer, require_float_input, set_input_shape, skeleton
from fimaudit.errors import InputDtypeError, InvalidArgumentError, InvalidModelFileError

WHERE = "fa.wrap(..., memory_limit=...)"

_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
}


def _softmax_logits(model, output_name):
    """The input of a final Softmax (over the last axis) producing ``output_name``, or None."""
    for node in model.graph.node:
        if output_name in node.output and node.op_type == "Softmax":
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            return node.input[0] if axis in (-1, 1) else None
    return None


def _check_run_memory(proto, name, shape, limit):
    """Refuse a model whose activations for one batch of ``shape`` exceed ``limit`` bytes."""
    model = skeleton(proto)
    set_input_shape(model, name, shape)
    try:
        _, shapes = infer(model)
    except InvalidModelFileError:  # ONNX inference fails where onnxruntime may not: its session decides
        return
    total, (tensor, tshape, nbytes) = memory.run_cost(model, shapes)
    if total > limit:
        memory.refuse(f"tensor {tensor!r}", tshape, nbytes, limit, total, WHERE)


def _session(proto, providers):
    """An onnxruntime session; a model written by a newer onnx than this onnxruntime reads
    (IR version too high) is retried at the highest IR version it names, which is safe
    when the opsets are supported (the run would fail otherwise)."""
    try:
        return ort.InferenceSession(proto.SerializeToString(), providers=providers)
    except Exception as err:
        found = re.search(r"max supported IR version: (\d+)", str(err))
        if found and proto.ir_version > int(found.group(1)):
            older = onnx.ModelProto()
            older.CopyFrom(proto)
            older.ir_version = int(found.group(1))
            return _session(older, providers)
        raise InvalidModelFileError(f"onnxruntime cannot create a session for this model: {err}") from None


class OnnxModel(CallableModel):
    """``source``: path, bytes or ModelProto. Options: ``input_shape`` (needed when the
    graph leaves non-batch dimensions symbolic), ``input_name``/``output_name`` (for
    graphs with several), ``output`` ("auto": logits, taken before a final Softmax when
    there is one; or "probs"/"logits"), ``providers`` (onnxruntime execution providers),
    ``memory_limit`` (bytes a forward pass of one batch may need, checked before running)."""

    def __init__(
        self,
        source,
        *,
        input_shape=None,
        input_name=None,
        output_name=None,
        output="auto",
        providers=None,
        likelihood="categorical",
        sigma=1.0,
        prob_tol=1e-3,
        memory_limit=memory.DEFAULT_LIMIT,
    ):
        self.proto = load_model(source, memory_limit=memory_limit, where=WHERE)
        graph = self.proto.graph
        inits = {t.name for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in inits]
        if input_name is None and len(inputs) != 1:
            raise InvalidArgumentError(
                f"the ONNX graph has {len(inputs)} inputs {[i.name for i in inputs]}; pass input_name= to pick one"
            )
        inp = inputs[0] if input_name is None else next((i for i in inputs if i.name == input_name), None)
        if inp is None:
            raise InvalidArgumentError(f"no graph input named {input_name!r}; inputs: {[i.name for i in inputs]}")
        require_float_input(inp)
        if inp.type.tensor_type.elem_type not in _DTYPES:
            raise InputDtypeError(
                f"graph input {inp.name!r} has dtype {dtype_name(inp.type.tensor_type.elem_type)}, which numpy cannot "
                "feed to onnxruntime: export the model with a float32, float64 or float16 input"
            )
        dims = inp.type.tensor_type.shape.dim
        batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
        input_shape = concrete_shape(inp, input_shape)[1:]  # checks positive sizes and the fixed dimensions
        outputs = [o.name for o in graph.output]
        if output_name is None and len(outputs) != 1:
            raise InvalidArgumentError(f"the ONNX graph has outputs {outputs}; pass output_name= to pick one")
        out_name = output_name or outputs[0]
        if out_name not in outputs:
            raise InvalidArgumentError(f"no graph output named {out_name!r}; outputs: {outputs}")
        self.softmax_skipped = False
        if output == "auto":
            logits = _softmax_logits(self.proto, out_name)
            if logits is not None:
                self.proto.graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None))
                out_name, self.softmax_skipped = logits, True
            output = "logits"
        self.input_name, self.output_name = inp.name, out_name
        self.input_dtype = _DTYPES[inp.type.tensor_type.elem_type]
        self.fixed_batch = batch if batch else None
        _check_run_memory(self.proto, inp.name, (self.fixed_batch or 1, *input_shape), memory_limit)
        self.session = _session(self.proto, providers or ["CPUExecutionProvider"])
        if providers and providers[0] not in self.session.get_providers():
            warnings.warn(
                f"onnxruntime fell back from {providers[0]} to {self.session.get_providers()}: "
                "the model runs on the CPU",
                RuntimeWarning,
                stacklevel=2,
            )
        super().__init__(
            self._run,
            input_shape=input_shape,
            output=output,
            accepts="numpy",
            batch_size=self.fixed_batch,
            likelihood=likelihood,
            sigma=sigma,
            prob_tol=prob_tol,
        )

    def _run(self, batch):
        batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
        m = batch.shape[0]
        if self.fixed_batch and m < self.fixed_batch:  # pad to the graph's fixed batch
            pad = np.repeat(batch[-1:], self.fixed_batch - m, axis=0)
            batch = np.concatenate([batch, pad])
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return np.asarray(out, dtype=np.float64).reshape(out.shape[0], -1)[:m]

    def to_onnx(self):
        """The graph as loaded: without the logits output added to read a final Softmax's input
        (the bounds skip a final Softmax themselves)."""
        if not self.softmax_skipped:
            return self.proto
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        del proto.graph.output[-1]
        return proto

    def __getstate__(self):  # sessions do not pickle: executors get the graph and rebuild one
        state = dict(self.__dict__)
        state["session"] = None
        state["_providers"] = self.session.get_providers()
        return state

    def __setstate__(self, state):
        providers = state.pop("_providers")
        self.__dict__.update(state)
        self.session = _session(self.proto, providers)
