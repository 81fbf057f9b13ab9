r"""Certified ℓ2 Lipschitz constants for single ONNX nodes, one rule per op type.

Each rule bounds ``‖f(a) − f(b)‖₂ ≤ L ‖a − b‖₂`` for the node as a map of its one
variable input (the others constant), on the node's real input size:

* Gemm / MatMul with a constant operand: the spectral norm of the constant (SVD).
* Conv (zero padding, any stride, dilation, groups): the conv equals an isometric
  zero-embedding into an (H + k_h − 1) × (W + k_w − 1) grid, a circular convolution there
  and a coordinate restriction (plus subsampling for strides), so its norm is at most that
  of the circular convolution, which is ``max_ω σ_max(K̂(ω))`` over the 2-D DFT frequencies
  — computed exactly per frequency (Sedghi, Gupta & Long, ICLR 2019, Thm. 6; Delattre
  et al., ICML 2023, for the zero-padding comparison). Never the norm of the reshaped
  kernel matrix, which is not a bound. ConvTranspose: the adjoint, same rule.
* BatchNormalization: ``max |γ / √(var + ε)|`` (folded into a preceding Conv when it
  is that Conv's only consumer, which is tighter). Likewise a Mul/Div by a constant (a
  standardisation layer) that reaches a Gemm/MatMul with a constant weight through
  Reshape/Flatten only is folded into it: ``‖W diag(s)‖₂`` instead of ``max|s| · ‖W‖₂``;
  a per-channel one straight into an ungrouped Conv rescales the kernel's input channels.
* Pointwise activations: the supremum of |f'| (ReLU, Tanh, Clip, Softplus 1; Sigmoid ¼;
  LeakyReLU max(1, |α|); ELU max(1, α); SELU γ·max(1, α); HardSigmoid α; Erf 2/√π;
  GELU 1.128905 (sup of Φ(x) + xφ(x), reached at x = √2)).
* MaxPool: ``√m`` with m the most windows any input lies in (each output moves by at most
  the change inside its window); AveragePool: ``√(m / (k_h k_w))`` by the Schur test
  (row sums ≤ 1, column sums ≤ m/(k_h k_w)); GlobalAveragePool ``1/√(HW)``.
* Data movement (Reshape, Flatten, Transpose, (Un)Squeeze, Identity, Dropout, Pad with
  zeros, Slice, Cast, Split): 1; Gather with constant indices: √(largest multiplicity).
* Add / Sub / Mul / Div with a constant: 1 or max |c|; softmax inside the graph: ½.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import NonFiniteBoundError, UnsupportedOnnxOpError

ACTIVATIONS = {
    "Relu": 1.0,
    "Tanh": 1.0,
    "Clip": 1.0,
    "Softplus": 1.0,
    "Sigmoid": 0.25,
    "Abs": 1.0,
    "Neg": 1.0,
    "Erf": 2 / math.sqrt(math.pi),
    "Gelu": 1.128905,
    "Identity": 1.0,
    "Dropout": 1.0,
    "Reshape": 1.0,
    "Flatten": 1.0,
    "Transpose": 1.0,
    "Squeeze": 1.0,
    "Unsqueeze": 1.0,
    "Cast": 1.0,
    "Slice": 1.0,
    "Split": 1.0,
    "Softmax": 0.5,
}


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def spectral_norm(M):
    M = np.asarray(M, dtype=np.float64)
    if M.ndim <= 1:
        return float(np.max(np.abs(M))) if M.size else 0.0
    M = M.reshape(-1, M.shape[-2], M.shape[-1])
    return float(np.max(np.linalg.norm(M, ord=2, axis=(-2, -1))))


def conv_norm(W, spatial, dilations=None, group=1):
    """Certified bound on the ℓ2 norm of a zero-padded convolution with kernel W
    (c_out, c_in/group, *k) on inputs of size ``spatial`` (any stride)."""
    W = np.asarray(W, dtype=np.float64)
    k = W.shape[2:]
    dil = dilations or [1] * len(k)
    keff = [(kk - 1) * d + 1 for kk, d in zip(k, dil)]
    grid = [int(s) + ke - 1 for s, ke in zip(spatial, keff)]
    K = np.zeros((*W.shape[:2], *grid))
    idx = tuple(slice(0, ke, d) for ke, d in zip(keff, dil))
    K[(slice(None), slice(None)) + idx] = W
    F = np.fft.fftn(K, axes=tuple(range(2, 2 + len(k))))
    cout = W.shape[0] // group
    best = 0.0
    for g in range(group):
        Fg = F[g * cout : (g + 1) * cout]  # (cout, cin_g, *grid)
        mats = np.moveaxis(Fg.reshape(Fg.shape[0], Fg.shape[1], -1), 2, 0)  # (freqs, cout, cin_g)
        best = max(best, float(np.max(np.linalg.norm(mats, ord=2, axis=(-2, -1)))))
    return best


def windows_per_input(kernel, strides):
    return math.prod(math.ceil(k / s) for k, s in zip(kernel, strides))


def unary(node, graph, var):
    """Lipschitz constant of ``node`` as a function of its variable input ``var``."""
    op = node.op_type
    if node.output[0] in getattr(graph, "scale_folded", ()):  # its factor lives in the next Gemm/MatMul
        return 1.0
    if op in ACTIVATIONS:
        return ACTIVATIONS[op]
    if op == "LeakyRelu":
        return max(1.0, abs(attr(node, "alpha", 0.01)))
    if op == "Elu":
        return max(1.0, attr(node, "alpha", 1.0))
    if op == "Selu":
        return attr(node, "gamma", 1.0507009873554805) * max(1.0, attr(node, "alpha", 1.6732632423543772))
    if op == "HardSigmoid":
        return attr(node, "alpha", 0.2)
    if op == "Pad":
        mode = attr(node, "mode", b"constant")
        if mode not in (b"constant", "constant"):
            raise UnsupportedOnnxOpError(f"Pad node {node.name!r} in mode {mode!r}: only zero padding has a rule")
        return 1.0
    if op == "Gather":
        idx = graph.const(node.input[1])
        _, counts = np.unique(idx, return_counts=True)
        return math.sqrt(float(counts.max())) if counts.size else 0.0
    if op in ("Gemm", "MatMul") and node.output[0] in getattr(graph, "scale_fold", {}):
        B = graph.const(node.input[1]).astype(np.float64)
        s = graph.scale_fold[node.output[0]]
        B = B * s[None, :] if (op == "Gemm" and attr(node, "transB", 0)) else s[:, None] * B
        return (abs(attr(node, "alpha", 1.0)) if op == "Gemm" else 1.0) * spectral_norm(B)
    if op in ("Gemm", "MatMul"):
        other = [i for i in node.input[:2] if i != var]
        if len(other) != 1 or not graph.is_const(other[0]):
            raise UnsupportedOnnxOpError(
                f"{op} node {node.name!r}: its other operand is neither constant nor an activation"
            )
        B = graph.const(other[0])
        scale = abs(attr(node, "alpha", 1.0)) if op == "Gemm" else 1.0
        return scale * spectral_norm(B)
    if op in ("Conv", "ConvTranspose"):
        W = graph.const(node.input[1])
        if op == "ConvTranspose":  # the adjoint of a convolution with the swapped kernel
            W = np.swapaxes(W, 0, 1)
            spatial = graph.shape(node.output[0])[2:]
        else:
            spatial = graph.shape(node.input[0])[2:]
        W = graph.bn_fold.get(node.output[0], 1.0) * W if op == "Conv" else W
        if op == "Conv" and node.output[0] in getattr(graph, "scale_fold", {}):  # input-channel scale
            s = graph.scale_fold[node.output[0]]
            W = np.asarray(W, dtype=np.float64) * s.reshape(1, -1, *([1] * (np.ndim(W) - 2)))
        return conv_norm(W, spatial, attr(node, "dilations"), attr(node, "group", 1))
    if op == "BatchNormalization":
        if node.output[0] in graph.bn_folded:
            return 1.0
        g, _, _, var_ = (graph.const(n) for n in node.input[1:5])
        return float(np.max(np.abs(g / np.sqrt(var_ + attr(node, "epsilon", 1e-5)))))
    if op == "MaxPool":
        k = attr(node, "kernel_shape")
        return math.sqrt(windows_per_input(k, attr(node, "strides", [1] * len(k))))
    if op == "AveragePool":
        k = attr(node, "kernel_shape")
        return math.sqrt(windows_per_input(k, attr(node, "strides", [1] * len(k))) / math.prod(k))
    if op == "GlobalAveragePool":
        return 1.0 / math.sqrt(math.prod(graph.shape(node.input[0])[2:]))
    if op in ("ReduceMean", "ReduceSum"):
        shape = graph.shape(node.input[0])
        axes = attr(node, "axes") or (list(graph.const(node.input[1])) if len(node.input) > 1 else range(len(shape)))
        m = math.prod(shape[a] for a in axes)
        return 1.0 / math.sqrt(m) if op == "ReduceMean" else math.sqrt(m)
    if op in ("Add", "Sub"):
        return 1.0  # a constant operand shifts
    if op in ("Mul", "Div"):
        other = [i for i in node.input if i != var]  # the caller routes products of activations elsewhere
        c = graph.const(other[0]).astype(np.float64)
        if op == "Div" and np.any(c == 0):
            raise NonFiniteBoundError(
                f"Div node {node.name!r} divides by the constant {other[0]!r}, which is 0 in {int(np.sum(c == 0))} of "
                f"{c.size} entries: the outputs there are inf or NaN on every input, so no finite bound holds"
            )
        return float(np.max(np.abs(c if op == "Mul" else 1.0 / c)))
    raise UnsupportedOnnxOpError(f"no certified Lipschitz rule for ONNX op {op!r} (node {node.name!r})")
