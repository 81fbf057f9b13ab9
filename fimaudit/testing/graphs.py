"""Small ONNX files with known answers, for tests of the command line and the ONNX adapter."""

from __future__ import annotations

import numpy as np

__all__ = ["save_gemm_onnx"]


def save_gemm_onnx(W, path):
    """Write the one-node graph ``logits = x @ W`` (W: d × C, stored as float32; x: (N, d),
    any batch) to ``path``, opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    W = np.asarray(W, dtype=np.float32)
    d, C = W.shape
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", C])],
        [numpy_helper.from_array(W, "W")],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
