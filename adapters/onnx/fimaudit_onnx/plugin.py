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
        from fimaudit.blackbox import black_box

        from .model import OnnxModel

        return black_box(OnnxModel, obj, **options)


PLUGIN = _OnnxPlugin()
