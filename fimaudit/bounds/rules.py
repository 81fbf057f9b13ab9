r"""Certified ℓ2 Lipschitz constants for single ONNX nodes, one rule per op type.

Each rule bounds ``‖f(a) − f(b)‖₂ ≤ L ‖a − b‖₂`` for the node as a map of its one
variable input (the others constant), on the node's real input size:

* Gemm / MatMul with a constant operand: the spectral norm of the constant (SVD, or a
  certificate on its Gram matrix for large matrices, :func:`spectral_norm`).
* Conv (zero padding, any stride, dilation, groups): at most the norm of the circular
  convolution on the (n + k − 1) grid, ``max_ω σ_max(K̂(ω))`` over its DFT frequencies,
  certified by Cholesky or computed exactly (:mod:`fimaudit.bounds.convnorm`). Never
  the norm of the reshaped kernel matrix, which is not a bound. ConvTranspose: the adjoint
  of the Conv with the same weight tensor (same groups), on the transpose's output size.
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
* LRN: ``k^{−β} (1 + 2√m (β/(β+1))^{β+1})``, m = min(size, channels) (:func:`lrn`).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import NonFiniteBoundError, UnsupportedOnnxOpError
from .convnorm import RTOL, conv_norm, hermitian_max_eig, ritz_lower

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
SVD_SIDE = 256


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def spectral_norm(M):
    """‖M‖₂ of a matrix (or the largest over a stack): by SVD where the smaller side is at most
    SVD_SIDE, else certified within 1 + RTOL by :func:`fimaudit.bounds.convnorm.hermitian_max_eig`
    on its Gram matrix. Before that product is formed, a Ritz value of MᵀM from products with M
    (a lower bound on ‖M‖₂²) is set against ‖M‖_F² ≥ ‖M‖₂²: where they agree within 1 + RTOL
    (a matrix of rank one, say) ‖M‖_F is returned and the Gram matrix is never computed."""
    M = np.asarray(M, dtype=np.float64)
    if M.ndim <= 1:
        return float(np.max(np.abs(M))) if M.size else 0.0
    M = M.reshape(-1, M.shape[-2], M.shape[-1])
    if min(M.shape[-2:]) <= SVD_SIDE:
        return float(np.max(np.linalg.norm(M, ord=2, axis=(-2, -1))))
    M = M if M.shape[-1] <= M.shape[-2] else M.transpose(0, 2, 1)  # the Gram side is the smaller
    frob = np.linalg.norm(M, axis=(1, 2))
    scaled = M / np.where(frob > 0, frob, 1.0)[:, None, None]
    low = ritz_lower(
        lambda v: np.einsum("bji,bj->bi", scaled, np.einsum("bji,bi->bj", scaled, v)), *M.shape[::2], M.dtype
    )
    best = float(np.max(low * frob**2))
    if float(np.max(frob)) ** 2 <= (1 + RTOL) * best:
        return float(np.max(frob))
    G = M.transpose(0, 2, 1) @ M
    return math.sqrt(hermitian_max_eig(G, best)[0])


def lrn_params(node):
    """(size n, α, β, k) of an LRN node, refused unless α ≥ 0, β ≥ 0 and k > 0 (else the
    denominator can vanish, or the map grows faster than linearly)."""
    n, a, b, k = attr(node, "size"), attr(node, "alpha", 1e-4), attr(node, "beta", 0.75), attr(node, "bias", 1.0)
    if not (isinstance(n, int) and n >= 1 and a >= 0 and b >= 0 and k > 0):
        raise UnsupportedOnnxOpError(
            f"LRN node {node.name!r} with size={n}, alpha={a}, beta={b}, bias={k}: a bound needs size ≥ 1, alpha ≥ 0, "
            "beta ≥ 0 and bias > 0 (otherwise the denominator reaches 0 or the op is not Lipschitz)"
        )
    return n, float(a), float(b), float(k)


def lrn(node, channels=None):
    r"""LRN, ``b_c = a_c D_c^{−β}``, ``D_c = k + (α/n) S_c``, ``S_c = Σ_{j∈N(c)} a_j²`` over the
    channel window N(c) at each position: ``J = diag(D^{−β}) − E`` with
    ``E_cj = (2αβ/n) a_c a_j D_c^{−β−1}`` for j ∈ N(c). ``‖diag(D^{−β})‖ ≤ k^{−β}``; by
    Cauchy–Schwarz, ``‖Ex‖² ≤ Σ_c (2αβ/n)² a_c² S_c D_c^{−2β−2} Σ_{j∈N(c)} x_j²``, and with
    a_c² ≤ S_c and u = (α/n) S_c each factor is ``(2βu (k + u)^{−β−1})² ≤ (2k^{−β}(β/(β+1))^{β+1})²``
    (the maximum is at u = k/β); each j lies in at most m = min(n, C) windows, so
    ``L ≤ k^{−β} (1 + 2√m (β/(β+1))^{β+1})`` — for every input, whatever α."""
    n, _, b, k = lrn_params(node)
    m = min(n, channels) if channels else n
    return k**-b * (1.0 + 2.0 * math.sqrt(m) * (b / (b + 1.0)) ** (b + 1.0))


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
        W = graph.const(node.input[1])  # a ConvTranspose is the adjoint of the Conv with the same W
        spatial = graph.shape(node.output[0] if op == "ConvTranspose" else node.input[0])[2:]
        W = graph.bn_fold.get(node.output[0], 1.0) * W if op == "Conv" else W
        if op == "Conv" and node.output[0] in getattr(graph, "scale_fold", {}):  # input-channel scale
            s = graph.scale_fold[node.output[0]]
            W = np.asarray(W, dtype=np.float64) * s.reshape(1, -1, *([1] * (np.ndim(W) - 2)))
        return conv_norm(W, spatial, attr(node, "dilations"), attr(node, "group", 1))
    if op == "LRN":
        shape = graph.known_shape(node.input[0])
        return lrn(node, shape[1] if shape and len(shape) > 1 else None)
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
