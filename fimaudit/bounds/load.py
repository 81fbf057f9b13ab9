"""Loading ONNX models defensively: a size cap, the checker, and external data read only
from inside the model's own folder. ``onnx`` is imported here, never by ``import fimaudit``.

Anything that cannot be read as an ONNX model (random bytes, a truncated or empty file, text,
a directory) raises :class:`~fimaudit.errors.InvalidModelFileError` naming the file.
Memory: the bytes every initializer declares (``dims`` × element size, external data
included) are summed from the tensors' headers before any external data is read, and a
model over ``memory_limit`` is refused by name, so loading never allocates more than the
file itself and that limit.
Non-finite values: initializers holding NaN or inf load (an unused one is harmless), and the
bound refuses, by name, the node that reads one (:mod:`fimaudit.bounds.finite`).
"""

from __future__ import annotations

import os

import onnx

from ..errors import InvalidModelFileError
from . import memory
from .shapes import declared_dims

MAX_BYTES = 2 << 30  # 2 GiB: protobuf's own limit for one message


def load_model(source, max_bytes=MAX_BYTES, memory_limit=memory.DEFAULT_LIMIT, where=None):
    """A checked ``onnx.ModelProto`` from a path, bytes or ModelProto. ``where`` names the
    call whose ``memory_limit=`` raises the limit, for the refusal's message."""
    memory.check_limit(memory_limit)
    where = where or "lipschitz_bound(..., memory_limit=...)"
    if isinstance(source, onnx.ModelProto):
        model, folder, name = source, None, "the ONNX model"
    elif isinstance(source, (bytes, bytearray)):
        name = f"the ONNX model ({len(source)} bytes)"
        if len(source) > max_bytes:
            raise InvalidModelFileError(f"{name} is over the cap of {max_bytes} bytes")
        model, folder = _parse(bytes(source), name), None
    else:
        path = os.path.abspath(os.fspath(source))
        name = path
        if not os.path.isfile(path):
            what = "a directory" if os.path.isdir(path) else "no file"
            raise InvalidModelFileError(f"no ONNX file at {path}: {what} there; pass the path of a .onnx file")
        size = os.path.getsize(path)
        if size > max_bytes:
            raise InvalidModelFileError(f"{path} is {size} bytes, over the cap of {max_bytes}")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise InvalidModelFileError(f"cannot read {path}: {err.strerror or err}") from None
        model, folder = _parse(data, path), os.path.dirname(path)
    _declared(model, name)
    memory.initializers(model, memory_limit, where)
    if folder is not None:
        _load_external(model, folder, name)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as err:
        raise InvalidModelFileError(f"{name} fails the ONNX checker: {str(err).splitlines()[0]}") from None
    return model


def _parse(data, name):
    """A ModelProto from serialized bytes; garbage, text and truncated files refused by name."""
    if not data:
        raise InvalidModelFileError(f"{name} is empty: not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as err:  # google.protobuf.message.DecodeError and friends
        raise InvalidModelFileError(
            f"{name} is not an ONNX model (it does not parse as one: {err}); a truncated or corrupt file?"
        ) from None
    if not model.HasField("graph") or not model.graph.node:
        raise InvalidModelFileError(f"{name} holds no ONNX graph (no nodes): not an ONNX model, or a truncated one")
    return model


def _declared(model, name):
    """Refuse zero or negative declared input sizes (shapes.declared_dims) by the file's name."""
    for vi in model.graph.input:
        if vi.type.HasField("tensor_type"):
            try:
                declared_dims(vi)
            except InvalidModelFileError as err:
                raise InvalidModelFileError(f"{name}: {err}") from None


def _load_external(model, folder, name):
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    real = os.path.realpath(folder)
    for t in model.graph.initializer:
        if uses_external_data(t):
            info = {e.key: e.value for e in t.external_data}
            loc = info.get("location", "")
            target = os.path.realpath(os.path.join(folder, loc))
            if os.path.commonpath([real, target]) != real:
                raise InvalidModelFileError(
                    f"tensor {t.name!r} reads external data from {loc!r}, outside the model's folder {folder}: "
                    "refused; keep external data files beside the model"
                )
            need = memory.count(t.dims) * memory.ITEMSIZE.get(t.data_type, 8)
            have = os.path.getsize(target) - int(info.get("offset", 0) or 0) if os.path.isfile(target) else -1
            if have < need:
                raise InvalidModelFileError(
                    f"tensor {t.name!r} of {name} declares {need} bytes of external data in {loc!r}, which holds "
                    f"{max(have, 0)} from its offset: the data file is missing or truncated"
                )
    try:
        load_external_data_for_model(model, folder)
    except (OSError, ValueError) as err:
        raise InvalidModelFileError(f"cannot read the external data of {name}: {err}") from None
