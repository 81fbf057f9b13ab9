"""Entry point: ONNX ModelProtos, serialized bytes (with wrap(..., format="onnx")) and
``.onnx`` paths. Importing this module imports no framework."""

from __future__ import annotations

import os
import sys


class _OnnxPlugin:
    name = "onnx"

    def claims(self, obj) -> bool:
        onnx = sys.modules.get("onnx")
        if onnx is not None and isinstance(obj, onnx.ModelProto):
            return True
        if isinstance(obj, (str, os.PathLike)) and not str(obj).startswith(("http://", "https://")):
            return str(obj).lower().endswith(".onnx")
        return False

    def wrap(self, obj, **options):
        from fimaudit.blackbox import FiniteDifferenceModel
        from fimaudit.blackbox.finite_differences import FD_OPTIONS

        from .model import OnnxModel

        fd = {k: options.pop(k) for k in FD_OPTIONS if k in options}
        return FiniteDifferenceModel(OnnxModel(obj, **options), **fd)


PLUGIN = _OnnxPlugin()
