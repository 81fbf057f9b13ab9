r"""Products of two activations (MatMul, Mul: attention's QKᵀ and weights·V) and softmax
inside the graph, forward on intervals and backward on interval Jacobian rows.

Rows arrive as in :mod:`.backward`: signed rows M (the m primary rows, then generator blocks)
and radii R ≥ 0 on the primary rows; every row g over the box is ``g_s + ρ`` with
``g_s = M_0 + Σ_k ε_k M_k`` and |ρ| ≤ R. Write ``A = |M_0| + Σ_k |M_k|`` (so |g_s| ≤ A). Each
rule sends every signed row through the Jacobian at the intervals' midpoints (a linear map, so
generators stay signed) and bounds the rest by magnitudes.

**Products** Y = a·b (elementwise, broadcast) or Y = a b (matrix product over the last two
axes, broadcast over the others). Forward, with a ∈ a_m ± a_r and b ∈ b_m ± b_r: elementwise
the ends are the extremes of the four corner products (the McCormick envelope's range); for a
matrix product ``a_m b_m ± (|a_m| b_r + a_r |b_m| + a_r b_r)`` (Rump 1999, midpoint-radius
products), intersected for Y = P V, P a softmax's output along the contracted axis, with the
exact range over the softmax's rows (:mod:`.simplex`). Backward, dY = da·b + a·db, so
∂z/∂a = g·b and ∂z/∂b = a·g (elementwise), or g bᵀ and aᵀ g (matrix); with b = b_m + δ, |δ| ≤ b_r:
``g b − g_s b_m = g_s δ + ρ b``, bounded by ``A b_r + R (|b_m| + b_r)`` (matrix: the same
products with |·| matrices), and likewise for a.

**Softmax** p = softmax(u) along one axis. Forward (Shi et al. 2020), with u ∈ [l, u]:
``p_i ∈ [e^{l_i} / (e^{l_i} + Σ_{j≠i} e^{u_j}), e^{u_i} / (e^{u_i} + Σ_{j≠i} e^{l_j})]``, narrowed
where the pass tightens by bounds on log p through log-sum-exp (:mod:`.logsoftmax`). Its
Jacobian is diag(p) − p pᵀ, so a row g goes to ``h(g, p) = g ⊙ p − (g·p) p``; as Σ p = 1 at
every point, h(g − c1, p) = h(g, p) for any constant c, so each signed row is first centred by
its p_m-weighted mean (a row's common part, which the radii below would count, cancels). With
p = p_m + δ, |δ| ≤ p_r, the signed rows go to h(M, p_m) and

``h(g, p) − h(g_s, p_m) = g_s ⊙ δ + ρ ⊙ p − p_m (g_s·δ + ρ·p) − δ (g_s·p)``,

bounded by ``A ⊙ p_r + R ⊙ p_h + p_m T + p_r (S + Σ A p_r)`` with p_h = p_m + p_r,
``T = Σ_i (A_i p_r,i + R_i p_h,i)`` and ``S = Σ_k |M_k·p_m|`` (|g_s·p| ≤ S + Σ A p_r).

References: Rump, BIT 39, 1999, "Fast and parallel interval arithmetic"; Shi et al., ICLR
2020, "Robustness verification for Transformers"; Bonaert et al., PLDI 2021, "Fast and
precise certification of transformers" (DeepT).
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOnnxOpError
from ..interval_rules import mul, softmax_interval
from ..rules import attr
from . import logsoftmax, simplex
from .layout import axis, full, held, unbroadcast


def _refuse(node, why):
    return UnsupportedOnnxOpError(
        f"{node.op_type} node {node.name!r} {why}: no local bound rule for it; the global lipschitz_bound still works"
    )


def check(node, graph):
    if node.op_type == "MatMul" and min(len(graph.shape(i)) for i in node.input[:2]) < 2:
        raise _refuse(node, "multiplies a vector operand")
    if node.op_type == "Softmax":
        rank = len(graph.shape(node.input[0]))
        opset = next((o.version for o in graph.model.opset_import if o.domain in ("", "ai.onnx")), 13)
        if opset < 13 and attr(node, "axis", 1) % rank != rank - 1:
            raise _refuse(node, "normalises over several axes (opset < 13)")


def _ends(p, node, g, rank):
    """(point, lo, hi) of both factors in the full form, padded to the output's rank."""
    return [tuple(full(d[i], g, i, rank) for d in (p.point, p.lo, p.hi)) for i in node.input[:2]]


def forward(p, node):
    """(point, lo, hi) of a product's or a softmax's output, as the engine keeps it."""
    g, out = p.net.g, node.output[0]
    rank = len(g.shape(out))
    if node.op_type == "Softmax":
        v = node.input[0]
        ax = axis(attr(node, "axis", -1), rank)
        z = full(p.point[v], g, v)
        e = np.exp(z - z.max(axis=ax, keepdims=True))
        lo, hi = softmax_interval((full(p.lo[v], g, v), full(p.hi[v], g, v)), ax)
        if p.tighten:  # through log-sum-exp, from the (tightened) scores (:mod:`.logsoftmax`)
            lo, hi = logsoftmax.narrow(p, node, lo, hi, max(1, (1 << 22) // (2 * p.net.largest)))
        p.deriv[out] = ((lo + hi) / 2, (hi - lo) / 2)
        return tuple(held(t, g, out) for t in (e / e.sum(axis=ax, keepdims=True), lo, hi))
    (pa, la, ha), (pb, lb, hb) = _ends(p, node, g, rank)
    if node.op_type == "Mul":
        lo, hi = mul((la, ha), (lb, hb))
        return tuple(held(t, g, out) for t in (pa * pb, lo, hi))
    am, ar, bm, br = (la + ha) / 2, (ha - la) / 2, (lb + hb) / 2, (hb - lb) / 2
    mid, rad = am @ bm, np.abs(am) @ br + ar @ np.abs(bm) + ar @ br
    lo, hi = mid - rad, mid + rad
    if softmax_rows(p, node.input[0]):  # P V: the exact range over the softmax's rows (:mod:`.simplex`)
        tight = simplex.attention(la, ha, lb, hb)
        if tight is not None:
            lo, hi = np.maximum(lo, tight[0]), np.minimum(hi, tight[1])
    return tuple(held(t, g, out) for t in (pa @ pb, lo, hi))


def softmax_rows(p, name):
    """Whether tensor ``name`` is a softmax's output along its last axis (rows of p ≥ 0, Σ p = 1)."""
    k = p.net.producer.get(name)
    if k is None or p.net.nodes[k].op_type != "Softmax":
        return False
    rank = len(p.net.g.shape(name))
    return attr(p.net.nodes[k], "axis", -1) % rank == rank - 1  # as :func:`forward` reads it (:func:`check`)


def refine(p, node):
    """Softmax: p's interval for the backward pass, from the (tightened) output interval."""
    g, out = p.net.g, node.output[0]
    lo, hi = (np.clip(full(d[out], g, out), 0.0, 1.0) for d in (p.lo, p.hi))
    pm, pr = p.deriv[out]
    lo, hi = np.maximum(lo, pm - pr), np.minimum(hi, pm + pr)
    p.deriv[out] = ((lo + hi) / 2, (hi - lo) / 2)


def _magnitude(M, m):
    """A = |M_0| + Σ_k |M_k| on the m primary rows."""
    return np.abs(M).reshape(-1, m, *M.shape[1:]).sum(0)


def backward(p, node, M, R, m):
    """[(input, signed rows, radii)] for a product's or a softmax's variable inputs."""
    g, out, live = p.net.g, node.output[0], p.net.live
    rank = len(g.shape(out))
    Mf = full(M, g, out)
    if node.op_type == "Softmax":  # h(g − c1, p) = h(g, p) where Σ p = 1: each signed row centred first
        pm, pr = p.deriv[out]
        ax = axis(attr(node, "axis", -1), rank)
        wsum = pm.sum(axis=ax, keepdims=True)
        Mf = Mf - (Mf * pm).sum(axis=ax, keepdims=True) / np.where(wsum > 0, wsum, 1.0)
    A = _magnitude(Mf, m)
    Rf = np.zeros_like(A) if R is None else full(R, g, out)
    if node.op_type == "Softmax":
        v = node.input[0]
        ph = pm + pr
        dot = (Mf * pm).sum(axis=ax, keepdims=True)
        S = np.abs(dot).reshape(-1, m, *dot.shape[1:]).sum(0)
        Apr = (A * pr).sum(axis=ax, keepdims=True)
        T = Apr + (Rf * ph).sum(axis=ax, keepdims=True)
        rad = A * pr + Rf * ph + pm * T + pr * (S + Apr)
        return [(v, held(Mf * pm - dot * pm, g, v), held(rad, g, v))]
    (_, la, ha), (_, lb, hb) = _ends(p, node, g, rank)
    am, ar, bm, br = (la + ha) / 2, (ha - la) / 2, (lb + hb) / 2, (hb - lb) / 2
    res = []
    if node.op_type == "Mul":
        parts = ((node.input[0], Mf * bm, A * br + Rf * (np.abs(bm) + br)),)
        parts += ((node.input[1], Mf * am, A * ar + Rf * (np.abs(am) + ar)),)
    else:
        t = lambda w: np.swapaxes(w, -1, -2)  # noqa: E731
        ga = (Mf @ t(bm), A @ t(br) + Rf @ t(np.abs(bm) + br))
        gb = (t(am) @ Mf, t(ar) @ A + t(np.abs(am) + ar) @ Rf)
        parts = ((node.input[0], *ga), (node.input[1], *gb))
    for name, sm, sr in parts:
        if name in live:
            res.append((name, unbroadcast(sm, g, name), unbroadcast(sr, g, name)))
    return res
