"""Loading ONNX models defensively: a size cap, the checker, and external data read only
from inside the model's own folder. ``onnx`` is imported here, never by ``import fimaudit``."""

from __future__ import annotations

import os

import onnx

from ..errors import InvalidModelFileError

MAX_BYTES = 2 << 30  # 2 GiB: protobuf's own limit for one message


def load_model(source, max_bytes=MAX_BYTES):
    """A checked ``onnx.ModelProto`` from a path, bytes or ModelProto."""
    if isinstance(source, onnx.ModelProto):
        model, folder = source, None
    elif isinstance(source, (bytes, bytearray)):
        if len(source) > max_bytes:
            raise InvalidModelFileError(f"the ONNX model is {len(source)} bytes, over the cap of {max_bytes}")
        model, folder = onnx.load_from_string(bytes(source)), None
    else:
        path = os.path.abspath(os.fspath(source))
        if not os.path.isfile(path):
            raise InvalidModelFileError(f"no ONNX file at {path}")
        if os.path.getsize(path) > max_bytes:
            raise InvalidModelFileError(f"{path} is {os.path.getsize(path)} bytes, over the cap of {max_bytes}")
        model = onnx.load(path, load_external_data=False)
        folder = os.path.dirname(path)
        _load_external(model, folder)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise InvalidModelFileError(f"the ONNX model fails the checker: {str(err).splitlines()[0]}") from None
    return model


def _load_external(model, folder):
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    real = os.path.realpath(folder)
    for t in model.graph.initializer:
        if uses_external_data(t):
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            target = os.path.realpath(os.path.join(folder, loc))
            if os.path.commonpath([real, target]) != real:
                raise InvalidModelFileError(
                    f"tensor {t.name!r} reads external data from {loc!r}, outside the model's folder {folder}: "
                    "refused; keep external data files beside the model"
                )
    load_external_data_for_model(model, folder)
