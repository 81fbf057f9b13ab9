"""Request and answer formats of common serving stacks: one ``encode``/``decode`` pair each.

``encode(batch)`` turns a numpy batch of shape (n, *input_shape) into the request's JSON,
``decode(json)`` reads the (n, C) outputs from the answer's JSON. The formats, from each
stack's published REST specification:

- ``"default"``: ``{"inputs": rows}`` → the rows under ``outputs``, ``predictions``,
  ``probabilities``, ``logits`` or ``scores``, or a bare list.
- ``"open-inference"`` (aliases ``"kserve-v2"``, ``"triton"``; the Open Inference Protocol,
  POST ``/v2/models/{name}/infer``): ``{"inputs": [{"name", "shape", "datatype", "data"}]}``
  with the batch flattened row-major in ``data``, its full shape (batch axis first) in
  ``shape`` and ``datatype`` FP32/FP64/FP16 after the rows' dtype → ``{"outputs": [{"name",
  "shape", "datatype", "data"}]}``, of which the one named ``output_name`` (or the only one)
  is read back into its ``shape``.
- ``"kserve-v1"`` (alias ``"tf-serving"``; TensorFlow Serving's row format, KServe V1):
  ``{"instances": rows}`` → ``{"predictions": rows}``.
- ``"mlflow"`` (the MLflow scoring server's ``/invocations``, tensor input):
  ``{"inputs": rows}`` → ``{"predictions": rows}`` (a list of records is read in its keys' order).

A decoder that cannot find the outputs raises :class:`UnreadableAnswer`, whose message names
what the answer holds and the ``protocol=`` / ``decode=`` options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from fimaudit.errors import InvalidArgumentError

__all__ = ["ANSWER_KEYS", "PROTOCOLS", "Protocol", "UnreadableAnswer", "open_inference", "protocol"]

ANSWER_KEYS = ("outputs", "predictions", "probabilities", "logits", "scores")
DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.float16): "FP16"}
HINT = "pass protocol= ('open-inference', 'kserve-v1', 'mlflow', 'default') or decode= to read its outputs"


class UnreadableAnswer(ValueError):
    """The answer's JSON does not hold outputs where the protocol puts them."""


class Protocol(NamedTuple):
    name: str
    encode: Callable
    decode: Callable


def seen(payload, limit=8):
    """What a JSON answer holds, in a few words: its keys, or its type."""
    if isinstance(payload, dict):
        keys = [str(k)[:40] for k in list(payload)[:limit]]
        more = f" and {len(payload) - limit} more" if len(payload) > limit else ""
        return f"an object with keys {keys}{more}" if keys else "an empty object"
    return f"a JSON {type(payload).__name__}"


def _under(payload, keys, name):
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for key in keys:
            if key in payload:
                return payload[key]
    want = " or ".join(repr(k) for k in keys)
    raise UnreadableAnswer(f"the answer is {seen(payload)}, without {want} ({name} protocol); {HINT}")


def default_encode(batch):
    return {"inputs": batch.tolist()}


def default_decode(payload):
    return _under(payload, ANSWER_KEYS, "default")


def rows_encode(batch):
    return {"instances": batch.tolist()}


def predictions_decode(payload, name="kserve-v1"):
    rows = _under(payload, ("predictions",), name)
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        return [list(r.values()) for r in rows]  # records (a data frame's rows), in their keys' order
    return rows


def open_inference(input_name="input-0", output_name=None):
    """The Open Inference Protocol (KServe V2, Triton) with the model's input and output names."""

    def encode(batch):
        datatype = DATATYPES.get(batch.dtype)
        if datatype is None:
            raise InvalidArgumentError(
                f"rows of dtype {batch.dtype} have no Open Inference datatype: pass dtype='float32' or 'float64'"
            )
        tensor = {"name": input_name, "shape": list(batch.shape), "datatype": datatype}
        return {"inputs": [{**tensor, "data": batch.reshape(-1).tolist()}]}

    def decode(payload):
        outputs = payload.get("outputs") if isinstance(payload, dict) else None
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise UnreadableAnswer(
                f"the answer is {seen(payload)}, not {{'outputs': [{{name, shape, datatype, data}}]}} "
                f"(open-inference protocol); {HINT}"
            )
        names = [o.get("name") for o in outputs]
        if output_name is not None:
            if output_name not in names:
                raise UnreadableAnswer(f"the answer has no output named {output_name!r}; its outputs are {names}")
            tensor = outputs[names.index(output_name)]
        elif len(outputs) == 1:
            tensor = outputs[0]
        else:
            raise UnreadableAnswer(f"the answer has {len(outputs)} outputs {names}: pass output_name= to pick one")
        try:
            data = np.asarray(tensor["data"], dtype=np.float64)
            shape = [int(s) for s in tensor["shape"]]
            return data.reshape(shape).reshape(shape[0], -1) if shape else data
        except (KeyError, TypeError, ValueError) as err:
            raise UnreadableAnswer(
                f"output {tensor.get('name')!r} is not a tensor with 'data' of its 'shape' ({type(err).__name__})"
            ) from None

    return Protocol("open-inference", encode, decode)


PROTOCOLS = {
    "default": Protocol("default", default_encode, default_decode),
    "open-inference": open_inference(),
    "kserve-v1": Protocol("kserve-v1", rows_encode, predictions_decode),
    "mlflow": Protocol("mlflow", default_encode, lambda payload: predictions_decode(payload, "mlflow")),
}
ALIASES = {"kserve-v2": "open-inference", "triton": "open-inference", "tf-serving": "kserve-v1"}


def protocol(spec):
    """A :class:`Protocol` from its name (or alias), or ``spec`` itself if it is one; None if unknown."""
    if isinstance(spec, Protocol):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower()
        return PROTOCOLS.get(ALIASES.get(key, key))
    return None
