r"""Bounds on a set B around one input x — a box, or a box intersected with an ℓ2 ball —:
every tensor's interval on B, and interval Jacobians ∂t/∂x over B of any tensor t, carried
backward from t.

Forward, node by node: intervals by interval arithmetic (:mod:`.linear`, :mod:`.moves`,
:mod:`.activations`, :mod:`.products`, :mod:`.norms`; tensors held as :mod:`.layout` says);
before a nonlinearity reads a pre-activation t that depends on the input through an earlier
nonlinearity, t's interval is tightened by the intersection of two sound bounds (for the units
that interval arithmetic cannot settle: unstable ReLUs, every unit of a smooth activation):
the mean-value form ``t(x') ∈ t(x) + J_B (x' − x)`` with J_B the interval Jacobian of t over B
computed backward from t, and the CROWN linear bounds of :mod:`.crown` (through products and
normalisations, and from a softmax back by the mean-value form). Every derivative
interval and linear relaxation a backward pass uses belongs to a nonlinearity before t, so it
is already known. On a ball the first pre-activations are tightened as well (CROWN is exact on
an affine map), so every interval holds on the ball. A max pool's candidate cells are those
interval arithmetic cannot exclude (:func:`.grid.max_candidates`: ties included), less those
CROWN proves below the window's best (:func:`.crown.settle_pool`). Every input of a product,
softmax, LayerNormalization or LRN is tightened by the mean-value form (and the outputs of
softmax and LayerNormalization, whose rules reread their intervals), and for each the bound
|J_mid| + J_rad ≥ |∂t/∂x| over B is kept: a radius
R ≥ |ρ| on rows at t then reaches the input as R (|J_mid| + J_rad) ≥ |ρ ∂t/∂x| in one step.

Backward, from rows G = (G_mid ± G_rad) of ∂z/∂t: a linear node maps them to
``(G_mid A, G_rad |A|)``; a pointwise nonlinearity with derivative interval d_mid ± d_rad to
``(G_mid d_mid, |G_mid| d_rad + G_rad (|d_mid| + d_rad))``, which contains every product
g·d (midpoint-radius products, Rump 1999); a max pool sends each row to its window's argmax
where that is the same on the whole box, else to every candidate cell times [0, 1]. Then
every Jacobian of the path from x to t at every point of B lies in the result, so
``sup_B ‖∂t/∂x‖₂ ≤ ‖J_mid‖₂ + ‖J_rad‖₂``; with every unit stable, J_rad = 0 and J_mid is the
Jacobian itself.

References: Zhang et al., NeurIPS 2018, "Efficient neural network robustness certification
with general activation functions" (CROWN: bounds from backward passes per layer); Zhang et
al., AAAI 2019 (RecurJac); Shi et al., NeurIPS 2022, "Efficiently computing local Lipschitz
constants of neural networks via bound propagation"; Xu et al., NeurIPS 2020 (auto_LiRPA).
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOnnxOpError
from . import activations, ballbox, budget, crown, grid, layout, linear, lrn, moves, norms, products, slopes

CHUNK_ELEMENTS = 1 << 22  # rows × tensor size per backward pass
JAC_ELEMENTS = 1 << 24  # |∂t/∂x| bounds kept for the backward passes (:mod:`.backward`)
SMOOTH = {"product": products, "softmax": products, "layernorm": norms, "lrn": lrn}  # roles with their own rules


class Network:
    """The nodes between a graph's input and its logits, each with its role."""

    def __init__(self, graph):
        self.g, live, self.nodes, self.roles = graph, {graph.input}, [], []
        producer = {}
        for node in graph.nodes:
            if not any(i in live for i in node.input) or graph.folded(node):
                continue
            self.roles.append(self._role(node, live, producer))
            self.nodes.append(node)
            for o in node.output:
                if o:
                    live.add(o)
                    producer[o] = len(self.nodes) - 1
            if graph.output in node.output:
                break
        self.live, self.producer, self.biases = live, producer, {}
        self.largest = max(int(np.prod(graph.shape(n.output[0]))) for n in self.nodes)
        self.work = budget.prefix(self)  # multiply-adds of one backward row from each tensor
        self.heavy = budget.heavy(self)

    def _role(self, node, live, producer):
        op, var = node.op_type, [i for i in node.input if i in live]
        if op in activations.KINDS:
            return "act"
        if op == "Mul" and len(var) == 2:
            for t, s in (var, var[::-1]):
                k = producer.get(s)
                if k is not None and self.nodes[k].op_type == "Sigmoid" and self.nodes[k].input[0] == t:
                    return "silu"
        if op in ("MatMul", "Mul") and len(var) == 2:
            products.check(node, self.g)
            return "product"
        if op == "Softmax":
            products.check(node, self.g)
            return "softmax"
        if op == "LayerNormalization":
            norms.check(node, self.g)
            return "layernorm"
        if op == "LRN":
            lrn.check(node, self.g)
            return "lrn"
        if op in ("MaxPool", *layout.SPATIAL) and not layout.plain(node, self.g, live):
            raise UnsupportedOnnxOpError(
                f"{op} node {node.name!r} reads a tensor whose first axis is not the batch: no local bound rule for "
                "it; the global lipschitz_bound still works"
            )
        if op == "MaxPool":
            return "maxpool"
        if op in moves.OPS and (len(var) > 1 or op == "Concat"):
            moves.check(node, self.g, live)
            return "combine"
        if op in moves.RESHAPES or op in moves.SELECT or op == "Transpose":
            moves.check(node, self.g, live)
            return "move"
        if op in linear.OPS and len(var) == 1:
            return "linear"
        raise UnsupportedOnnxOpError(
            f"{op} node {node.name!r}: no local bound rule for it (local bounds handle Conv, Gemm, MatMul with a "
            "constant, BatchNormalization, pools, ReLU/LeakyReLU/Sigmoid/Tanh/GELU/SiLU, sums, concatenations, "
            "reshapes, products of two activations, Softmax, LayerNormalization and LRN); the global lipschitz_bound "
            "still works"
        )

    def tensor_input(self, k):
        """The activation a nonlinear node k reads (SiLU: the one that is not its sigmoid)."""
        node = self.nodes[k]
        if self.roles[k] != "silu":
            return node.input[0]
        a, b = node.input[:2]
        j = self.producer.get(b)
        return a if j is not None and self.nodes[j].op_type == "Sigmoid" and self.nodes[j].input[0] == a else b


class Pass:
    """The bounds for one input x on the box [low, high] (x inside it), or on its
    intersection with the ℓ2 ball of radius ``ball`` around x; at most ``limit`` units of a
    tensor are tightened, on heavy graphs fewer (:mod:`.budget`; a subset keeps every bound
    sound, only looser). ``crown`` adds the linear bounds of :mod:`.crown` to the mean-value
    form (the intersection), their ReLU slopes optimised by ``alpha`` steps (:mod:`.slopes`)."""

    def __init__(self, net, x, low, high, tighten=True, limit=4096, ball=None, crown=True, alpha=0):
        self.limit, self.ball, self.crown, self.tighten, self.alpha = limit, ball, crown, tighten, alpha
        self.net, self.x, self.a, self.b = net, x, (low - x).reshape(-1), (high - x).reshape(-1)
        inp = net.g.input
        self.point, self.lo, self.hi = {inp: x}, {inp: low}, {inp: high}
        self.deriv, self.pool, self.lines, self.tightened, self.jac, self.kept = {}, {}, {}, 0, {}, 0
        self.spent = 0.0  # multiply-adds of tightening rows so far (:mod:`.budget`)
        nonlin = {inp: False}
        for k, node in enumerate(net.nodes):
            role, out = net.roles[k], node.output[0]
            if role in ("act", "silu", "maxpool"):
                t = net.tensor_input(k)
                before = net.roles[net.producer[t]] if t in net.producer else None
                first = not nonlin[t] and ball is not None and crown  # an affine map of the ball: exact by CROWN
                if tighten and (nonlin[t] or first) and not (role == "maxpool" and before in ("act", "maxpool")):
                    self._tighten(t, node if role == "act" else None, nonlin[t])
                nonlin[out] = True
            elif role in SMOOTH:  # a product, softmax or normalisation: every input, and keep its |∂t/∂x|
                for t in dict.fromkeys(i for i in node.input if i in net.live):
                    if tighten and t not in self.jac and t != inp:
                        self._tighten(t, None, keep=True)
                nonlin[out] = True
            else:
                nonlin[out] = any(nonlin.get(i, False) for i in node.input if i in net.live)
            self._forward(k, node, role)
            if role in ("softmax", "layernorm") and tighten and out not in self.jac:
                self._tighten(out, None, keep=True)  # then the rule's own intervals from the tightened output
                SMOOTH[role].refine(self, node)

    def _forward(self, k, node, role):
        g, net, out = self.net.g, self.net, node.output[0]
        if role in ("act", "silu"):
            op = "Silu" if role == "silu" else activations.kind(node)
            t = net.tensor_input(k)
            z, lo, hi = self.point[t], self.lo[t], self.hi[t]
            p, (a, b) = activations.value(op, node, z), activations.interval(op, node, lo, hi)
            dl, dh = activations.derivative(op, node, lo, hi)
            self.deriv[out] = ((dl + dh) / 2, (dh - dl) / 2)
        elif role == "maxpool":
            t = node.input[0]
            ins, outs = g.shape(t), g.shape(out)
            geo = grid.geometry(node, ins, outs, grid.kernel_of(node))
            masks, count = grid.max_candidates(self.lo[t], self.hi[t], geo, outs[2:])
            if self.crown and self.tighten and np.any(count > 1):
                step = max(1, CHUNK_ELEMENTS // self.net.largest)
                masks, count = crown.settle_pool(
                    self, t, geo, masks, outs[2:], step, lambda n: budget.allow(self, t, n)
                )
            sure = count == 1
            self.pool[out] = (geo, ins[2:], [(np.where(sure, m, 0.5 * m), np.where(sure, 0.0, 0.5 * m)) for m in masks])
            p, a, b = (grid.max_pool(v[t], geo, outs[2:]) for v in (self.point, self.lo, self.hi))
        elif role in SMOOTH:
            p, a, b = SMOOTH[role].forward(self, node)
        elif role == "move":
            p, a, b = (moves.move(node, g, v[node.input[0]]) for v in (self.point, self.lo, self.hi))
        elif role == "combine":
            p, a, b = moves.combine(node, g, self.point, self.lo, self.hi)
        else:
            var = next(i for i in node.input if i in net.live)
            c, r = (self.lo[var] + self.hi[var]) / 2, (self.hi[var] - self.lo[var]) / 2
            p, mid = (layout.forward(node, g, net.live, v) for v in (self.point[var], c))
            rad = layout.forward(node, g, net.live, r, absolute=True)
            a, b = mid - rad, mid + rad
        self.point[out], self.lo[out], self.hi[out] = p, np.minimum(a, p), np.maximum(b, p)

    def _tighten(self, t, node, mean_value=True, keep=False):
        lo, hi = self.lo[t].reshape(-1), self.hi[t].reshape(-1)
        if node is not None and node.op_type in ("Relu", "LeakyRelu"):
            rows = np.flatnonzero((lo < 0) & (hi > 0))  # the others are settled already
        else:
            rows = np.arange(lo.size)
        z, most = self.point[t].reshape(-1), budget.allow(self, t, min(rows.size, self.limit))
        if rows.size > most:  # the units likeliest to be settled: far from 0 for their width
            rows = rows[np.argsort(-np.abs(z[rows]) / np.maximum(hi[rows] - lo[rows], 1e-300))[:most]]
        if rows.size == 0:
            return
        lo, hi = lo.copy(), hi.copy()
        keep = keep and mean_value and rows.size == lo.size and self.kept + lo.size * self.a.size <= JAC_ELEMENTS
        jac = np.zeros((lo.size, self.a.size)) if keep else None
        step = max(1, CHUNK_ELEMENTS // (2 * self.net.largest))
        for s in range(0, rows.size, step):
            idx = rows[s : s + step]
            G = np.zeros((idx.size, lo.size))
            G[np.arange(idx.size), idx] = 1.0
            G = G.reshape((idx.size, *layout.shape(self.net.g, t)[1:]))
            if mean_value:
                Jm, Jr = self.backward(t, G)
                low, up = self.offsets(Jm, Jr)
                if keep:
                    jac[idx] = np.abs(Jm) + Jr
                lo[idx], hi[idx] = np.maximum(lo[idx], z[idx] + low), np.minimum(hi[idx], z[idx] + up)
            if self.crown:
                low, up = slopes.bounds(self, t, G, self.alpha)
                lo[idx], hi[idx] = np.maximum(lo[idx], low), np.minimum(hi[idx], up)
        self.tightened += rows.size
        if keep:
            self.jac[t], self.kept = jac, self.kept + jac.size
        self.lo[t], self.hi[t] = lo.reshape(self.lo[t].shape), hi.reshape(self.hi[t].shape)

    def offsets(self, Jm, Jr):
        """[low, up] ∋ J (x' − x) for every J in Jm ± Jr and x' in the box: per row, the sum
        over coordinates of the extreme products of [J_lo, J_hi] × [a, b] (a ≤ 0 ≤ b); on a
        ball of radius ρ also the range over the ball ∩ box (:func:`.ballbox.interval_range`)."""
        jl, jh = Jm - Jr, Jm + Jr
        prods = (jl * self.a, jl * self.b, jh * self.a, jh * self.b)
        low, up = np.minimum.reduce(prods).sum(1), np.maximum.reduce(prods).sum(1)
        if self.ball is None:
            return low, up
        bl, bu = ballbox.interval_range(jl, jh, self.a, self.b, self.ball)  # the ball ∩ box, exactly per sign
        return np.maximum(low, np.where(np.isnan(bl), -np.inf, bl)), np.minimum(up, np.where(np.isnan(bu), np.inf, bu))

    def backward(self, t, G, generators=0, split=False):
        """(J_mid, J_rad), each (rows, input size): the interval Jacobian over the box of the
        rows G (rows, *shape of t) of ∂(·)/∂t carried to the input (:mod:`.backward`); with
        ``split``, (M_0, R, M_k): the signed generators (k, rows, input size) apart from R."""
        from .backward import backward

        return backward(self, t, G, generators, split)
