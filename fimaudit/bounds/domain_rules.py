r"""Lipschitz rules that hold only on a bounded input domain (Transformers and friends).

LayerNormalization, attention's softmax(QKᵀ)V and any product of two activations are not
globally Lipschitz. Given a box D of inputs, :mod:`fimaudit.bounds.intervals` bounds every
tensor elementwise on D, and these rules bound each node on those intervals; composed along
the graph they bound ‖z(a) − z(b)‖ ≤ L‖a − b‖ for all a, b ∈ D.

* Product ``u ⊙ v`` (with broadcasting): u(a)v(a) − u(b)v(b) = (u(a) − u(b)) v(a) +
  u(b) (v(a) − v(b)), so L ≤ F_v L_u + F_u L_v, where F_v = max over the elements j of u of
  √(Σ_{k reads u_j} max|v_k|²) (the sum runs over the outputs an element is broadcast to).
  A quotient ``u / v`` is u ⊙ (1/v) with ‖1/v(a) − 1/v(b)‖ ≤ max 1/v² ‖v(a) − v(b)‖
  (the divisor's interval must exclude 0).
* MatMul ``A B`` of activations, per batch matrix: ‖ΔA B‖_F ≤ ‖ΔA‖_F ‖B‖₂, and for B in
  the interval matrix C ± R, ‖B‖₂ ≤ min(‖C‖₂ + ‖R‖₂, ‖|C| + R‖₂) (the spectral norm is
  monotone on non-negative matrices), or ‖B(c)‖₂ + L_B ρ from its value at the input box's
  centre, with the same broadcasting sum over batch matrices.
* LayerNormalization: per row the Jacobian is diag(γ) σ⁻¹ (I − 11ᵀ/m − x̂x̂ᵀ/m), and the
  bracket is an orthogonal projection minus a PSD term of norm ≤ 1, so ‖J‖ ≤ max|γ| / σ_floor,
  σ_floor a lower bound on √(var + ε) over the input's box intersected with the ball of radius
  L ρ around its value at the input box's centre (:func:`~fimaudit.bounds.intervals.sigma_floor`;
  both sets are convex, so the segment between two inputs stays in them).
* Exp, Log, Sqrt, Reciprocal, Pow: the supremum of |f'| on the input's interval.
* Softmax (inside the graph): its Jacobian diag(p) − ppᵀ lies between 0 and diag(p), so its
  norm is at most min(½, max_i p_i) over the output's interval.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UnsupportedOnnxOpError
from ..hints import reader, say
from .interval_rules import reciprocal, sigma_floor, softmax_interval
from .intervals import operand
from .rules import attr, spectral_norm

NEEDS_DOMAIN = {"LayerNormalization", "Exp", "Log", "Sqrt", "Reciprocal", "Pow"}
TIGHTER_ON_DOMAIN = {"Softmax"}


def need_domain(node, why):
    return UnsupportedOnnxOpError(
        f"{node.op_type} node {node.name!r} {why}: not globally Lipschitz. Declare the inputs' range with "
        f"{say('input_domain')} to bound it on that box"
        + (" (scalars or arrays of the input's shape)" if reader() == "python" else "")
    )


def _absmax(iv):
    return np.maximum(np.abs(iv[0]), np.abs(iv[1]))


def _reciprocal_slope(recip):
    """sup |d(1/v)/dv| = sup 1/v² = max |1/v|², from the interval of 1/v."""
    return float(np.max(_absmax(recip))) ** 2


def broadcast_factor(weights, operand_shape):
    """max over the operand's elements of √(Σ weights² over the outputs it is broadcast to);
    ``weights`` has the output's shape."""
    w2 = np.asarray(weights, dtype=np.float64) ** 2
    lead = w2.ndim - len(operand_shape)
    padded = (1,) * lead + tuple(operand_shape)
    axes = tuple(k for k in range(w2.ndim) if padded[k] == 1 and w2.shape[k] != 1)
    return math.sqrt(float(np.max(w2.sum(axis=axes)))) if w2.size else 0.0


def product(node, graph, box, L):
    """Mul / Div where at least one operand is an activation (see the module docstring)."""
    a, b = node.input[:2]
    ia, ib = operand(a, graph, box), operand(b, graph, box)
    La, Lb = L.get(a, 0.0), L.get(b, 0.0)
    if node.op_type == "Div":
        ib = reciprocal(ib, node)  # refuses a divisor interval that contains 0
        Lb = Lb * _reciprocal_slope(ib)
    shape = np.broadcast_shapes(ia[0].shape, ib[0].shape)
    wa = np.broadcast_to(_absmax(ib), shape)  # what multiplies a change of a
    wb = np.broadcast_to(_absmax(ia), shape)
    return (broadcast_factor(wa, ia[0].shape) * La if La else 0.0) + (
        broadcast_factor(wb, ib[0].shape) * Lb if Lb else 0.0
    )


def _matrices(iv, transpose, one_d):
    """Centre and radius matrices of an interval operand, in matrix form."""
    c, r = (iv[0] + iv[1]) / 2, (iv[1] - iv[0]) / 2
    if c.ndim == 1:
        c, r = (c[None, :], r[None, :]) if one_d == "row" else (c[:, None], r[:, None])
    return (np.swapaxes(c, -1, -2), np.swapaxes(r, -1, -2)) if transpose else (c, r)


def matmul(node, graph, box, L, domain=None):
    """MatMul / Gemm of two activations (or one, through the same rule)."""
    a, b = node.input[:2]
    ia, ib = operand(a, graph, box), operand(b, graph, box)
    gemm = node.op_type == "Gemm"
    nA = _batch_norms(*_matrices(ia, gemm and attr(node, "transA", 0), "row"))
    nB = _batch_norms(*_matrices(ib, gemm and attr(node, "transB", 0), "column"))
    if domain is not None:  # each batch matrix lies within L ρ (Frobenius) of its value at the centre
        nA, nB = (
            _ball_cap(domain, name, n, gemm and attr(node, which, 0), side)
            for name, n, which, side in ((a, nA, "transA", "row"), (b, nB, "transB", "column"))
        )
    batch = np.broadcast_shapes(nA.shape, nB.shape)
    scale = abs(attr(node, "alpha", 1.0)) if gemm else 1.0
    out = 0.0
    if L.get(a):
        out += broadcast_factor(np.broadcast_to(nB, batch), nA.shape) * L[a]
    if L.get(b):
        out += broadcast_factor(np.broadcast_to(nA, batch), nB.shape) * L[b]
    if gemm and len(node.input) > 2 and L.get(node.input[2]):
        out += abs(attr(node, "beta", 1.0)) * L[node.input[2]] / scale
    return scale * out


def _ball_cap(domain, name, norms, transpose, side):
    """min(norms, ‖M(c)‖₂ + L ρ) per batch matrix, when the tensor's centre value is known."""
    if name not in domain.centre or not np.isfinite(domain.reach(name)):
        return norms
    c = domain.centre[name]
    return np.minimum(norms, _batch_norms(*_matrices((c, c), transpose, side)) + domain.reach(name))


def _batch_norms(C, R):
    """Per batch matrix, a bound on ‖M‖₂ over |M − C| ≤ R: the smaller of ‖C‖₂ + ‖R‖₂ and
    ‖|C| + R‖₂ (the spectral norm is monotone on non-negative matrices)."""
    fc, fr = C.reshape(-1, *C.shape[-2:]), R.reshape(-1, *R.shape[-2:])
    return np.array(
        [min(spectral_norm(c) + spectral_norm(r), spectral_norm(np.abs(c) + r)) for c, r in zip(fc, fr)]
    ).reshape(C.shape[:-2])


def elementwise(node, graph, var, box, domain=None):
    """Lipschitz constant of a one-input node that needs its input's interval (and, for
    LayerNorm, the :class:`~fimaudit.bounds.intervals.Domain` for a better variance floor)."""
    op = node.op_type
    if box is None:
        raise need_domain(
            node,
            "has a slope that grows without bound"
            if op != "LayerNormalization"
            else "divides by the input's standard deviation",
        )
    lo, hi = box[var]
    if op == "Softmax":
        p_hi = softmax_interval((lo, hi), attr(node, "axis", -1))[1]
        return min(0.5, float(np.max(p_hi)))
    if op == "LayerNormalization":
        floor = float(np.min(sigma_floor(node, (lo, hi), domain, var)[1]))
        gamma = graph.const(node.input[1]) if len(node.input) > 1 and node.input[1] else np.ones(1)
        return float(np.max(np.abs(gamma))) / floor
    if op == "Exp":
        return float(np.exp(np.max(hi)))
    if op == "Reciprocal":
        return _reciprocal_slope(reciprocal((lo, hi), node))
    if op in ("Log", "Sqrt") and np.any(lo <= 0):
        raise UnsupportedOnnxOpError(
            f"{op} node {node.name!r}: its input reaches {float(np.min(lo)):.3g} ≤ 0 on the declared domain, where "
            "the slope is unbounded; narrow input_domain"
        )
    if op == "Log":
        return float(1.0 / np.min(lo))
    if op == "Sqrt":
        return float(0.5 / math.sqrt(np.min(lo)))
    if op == "Pow":
        e = float(graph.const(node.input[1]))
        if e == 2.0:
            return 2.0 * float(np.max(_absmax((lo, hi))))
        if np.all(lo > 0):
            return abs(e) * float(max(np.max(lo ** (e - 1)), np.max(hi ** (e - 1))))
        raise UnsupportedOnnxOpError(f"Pow node {node.name!r} with exponent {e} on an interval reaching 0: no rule")
    raise UnsupportedOnnxOpError(f"no domain rule for ONNX op {op!r} (node {node.name!r})")
