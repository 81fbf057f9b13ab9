r"""A bound on sup_B ‖J‖₂ from one nonnegative operator, for graphs where one backward pass per
logit costs too much: the magnitude Jacobian.

Every Jacobian of the path from x to the logits at a point of B is a product and sum of node
Jacobians; each is bounded elementwise by a nonnegative matrix: |A| for a linear node,
diag(|d_mid| + d_rad) for a pointwise activation (its derivative interval), for a max pool the
sum of its candidate cells' weights (1 on a sure argmax, 0.5 + 0.5 on each candidate), and for
LRN ``diag(P_hi) + κ diag(Q_abs) N diag(x_abs)`` (:mod:`.lrn`). Since |Σ ∏ J_i| ≤ Σ ∏ |J_i|, the
composed nonnegative operator K satisfies |J(x')| ≤ K elementwise for every x' in B, hence
``‖J(x')‖₂ ≤ ‖ |J(x')| ‖₂ ≤ ‖K‖₂`` (‖Jv‖ ≤ ‖|J| |v|‖ ≤ ‖K |v|‖).

K v (forward, one row) and Kᵀ u (backward, one row) are exact transposes node by node, so
KKᵀ is a nonnegative C × C matrix and, for any u > 0, the Collatz–Wielandt bound
``‖K‖₂² = ρ(KKᵀ) ≤ max_i (KKᵀu)_i / u_i`` holds; a few power steps from u = 1 bring it down
towards ρ (Perron–Frobenius). Where every node Jacobian is nonnegative (all weights and
derivatives ≥ 0) K is the Jacobian itself; with mixed signs it loses their cancellations.

References: Collatz, Math. Z. 1942; Wielandt, Math. Z. 1950 (the min-max ratio bound on the
Perron root).
"""

from __future__ import annotations

import numpy as np

from . import grid, layout, lrn, moves

STEPS = 8  # power steps on KKᵀ


class Unbounded(Exception):
    """A node (a product, softmax or normalisation) with no magnitude operator here."""


def forward(p, v):
    """K v at the logits (rows, *logits shape) for rows v ≥ 0 (rows, *input shape)."""
    net, g = p.net, p.net.g
    vals = {g.input: v}
    for k, node in enumerate(net.nodes):
        role, out = net.roles[k], node.output[0]
        if role in ("act", "silu"):
            dm, dr = p.deriv[out]
            y = vals[net.tensor_input(k)] * (np.abs(dm) + dr)
        elif role == "maxpool":
            geo, _, weights = p.pool[out]
            cells = grid.windows(vals[node.input[0]], geo, g.shape(out)[2:])
            y = sum((wm + wr) * x for (wm, wr), x in zip(weights, cells))
        elif role == "lrn":
            y = lrn.magnitude(p, node, vals[node.input[0]])
        elif role in ("product", "softmax", "layernorm"):
            raise Unbounded(role)
        elif role == "move":
            y = moves.move(node, g, vals[node.input[0]])
        elif role == "combine":
            ins = [i for i in node.input if i]
            m = next(vals[i].shape[0] for i in ins if i in net.live)
            up = {i: vals[i] if i in net.live else np.zeros((m, *np.shape(g.const(i)))) for i in ins}
            y = moves.combine(node, g, up, {i: -a for i, a in up.items()}, up)[2]  # the upper end: Σ |·|
        else:
            var = next(i for i in node.input if i in net.live)
            y = layout.forward(node, g, net.live, vals[var], absolute=True)
        vals[out] = y
    return vals[g.output]


def backward(p, u):
    """uᵀ K at the input (rows, input size) for rows u ≥ 0 (rows, *logits shape)."""
    net, g = p.net, p.net.g
    grads = {g.output: u}

    def push(name, L):
        grads[name] = grads[name] + L if name in grads else L

    for k in range(net.producer[g.output], -1, -1):
        node, role = net.nodes[k], net.roles[k]
        if node.output[0] not in grads:
            continue
        L = grads.pop(node.output[0])
        if role in ("act", "silu"):
            dm, dr = p.deriv[node.output[0]]
            push(net.tensor_input(k), L * (np.abs(dm) + dr))
        elif role == "maxpool":
            geo, hw, weights = p.pool[node.output[0]]
            push(node.input[0], grid.max_pool_adjoint(np.zeros_like(L), L, weights, geo, hw)[1])
        elif role == "lrn":
            push(node.input[0], lrn.magnitude_back(p, node, L))
        elif role in ("product", "softmax", "layernorm"):
            raise Unbounded(role)
        elif role == "move":
            push(node.input[0], moves.move_back(node, g, L, node.input[0]))
        elif role == "combine":
            for name, part in moves.combine_back_abs(node, g, L, net.live):
                push(name, part)
        else:
            var = next(i for i in node.input if i in net.live)
            push(var, layout.adjoint(node, g, net.live, L, absolute=True))
    L = grads.get(g.input)
    return np.zeros((len(u), p.a.size)) if L is None else L.reshape(len(u), -1)


def norm_bound(p, steps=STEPS):
    """An upper bound on ‖K‖₂ ≥ sup_B ‖J‖₂, or inf where a node has no magnitude operator."""
    out = p.net.g.output
    shape_out, shape_in = layout.shape(p.net.g, out), p.x.shape
    u = np.ones(shape_out)
    best = np.inf
    try:
        for _ in range(steps):
            w = backward(p, u).reshape(shape_in)
            s = forward(p, w).reshape(shape_out)
            with np.errstate(divide="ignore", invalid="ignore"):
                best = min(best, float(np.max(np.where(s > 0, s / u, 0.0))))
            if not np.any(s > 0) or not np.isfinite(best):
                break
            u = np.maximum(s / s.max(), 1e-30)  # stays positive, so the ratio stays a bound
    except Unbounded:
        return np.inf
    return float(np.sqrt(max(best, 0.0)) * (1 + 1e-6))  # a margin for the rounding of the sums
