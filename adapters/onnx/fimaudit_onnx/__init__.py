"""fimaudit-onnx: ONNX models through onnxruntime, audited as black boxes (forward only).

Importing the package (as plugin discovery does) imports neither onnx nor onnxruntime.
"""

__all__ = ["OnnxModel", "load_model"]


def __getattr__(name):
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(name)
