r"""Linear bounds by a backward pass (CROWN): for rows G (m, *shape of t) and every input x' of
the input set, ``Σ G ⊙ t(x') ≥ Λ · x' + β`` with Λ (m, input size) and β (m,) from one walk
back from t to the input, signed throughout (no magnitudes of weights).

A linear node y = A v + b maps the rows exactly: ``Λ ↦ Λ A`` and ``β += Λ · b``; moves, sums
and concatenations route them (a tensor read twice gets the sum of what both readers send); a
constant operand of a sum or concatenation adds its part to β. A pointwise activation with the
lines ``α_l z + β_l ≤ σ(z) ≤ α_u z + β_u`` on its pre-activation interval (:mod:`.relax`) takes
the lower line where a row's coefficient is ≥ 0 and the upper one where it is < 0, so each
product keeps the bound's direction. A max pool window with one candidate cell
(:func:`.grid.max_candidates`) is a selection of it; otherwise ``max_k v_k ≥ v_{k*}`` (k* the
cell with the largest lower end) bounds it below and the constant ``max_k u_k`` above. A
LayerNormalization and a product of two activations have linear relaxations of their own
(:mod:`.lnrelax`, :mod:`.prodrelax`); at a softmax or an LRN the walk stops with the mean-value
form of the rows there, a line in the input less a constant (:mod:`.meanvalue`); at a softmax,
per row, that line or the constant least value of the row over the softmax's rows
(:mod:`.simplex`: its output's box with Σ p = 1), whichever is larger on the set. Upper bounds
are the lower bounds of −G.

At the input the bound is made concrete over the set: on the box [x + a, x + b] (a ≤ 0 ≤ b),
``min Λ·x' = Λ·x + Σ min(Λ a, Λ b)``; on its intersection with the ℓ2 ball of radius ρ, the
exact minimum of :func:`.ballbox.lowest` (at least both the box's and the ball's ``Λ·x − ‖Λ‖₂ ρ``).

References: Zhang et al., NeurIPS 2018, "Efficient neural network robustness certification with
general activation functions" (CROWN); Xu et al., NeurIPS 2020, "Automatic perturbation analysis
for scalable certified robustness and beyond" (auto_LiRPA: the same pass on general graphs).
"""

from __future__ import annotations

import numpy as np

from ..rules import attr
from . import activations, ballbox, grid, layout, lnrelax, meanvalue, moves, prodrelax, relax, simplex


def _lines(p, k):
    """The relaxation of nonlinear node k on its input's interval, cached on the pass."""
    net, node = p.net, p.net.nodes[k]
    out = node.output[0]
    if out not in p.lines:
        t = net.tensor_input(k)
        if net.roles[k] == "maxpool":
            geo, hw = p.pool[out][0], net.g.shape(t)[2:]
            lows = grid.windows(p.lo[t], geo, net.g.shape(out)[2:], -np.inf)
            sure = np.logical_and.reduce([w[1] == 0 for w in p.pool[out][2]])  # one candidate per window
            kept = np.argmax(np.stack([w[0] for w in p.pool[out][2]]), axis=0)  # that candidate
            pick = np.where(sure, kept, np.argmax(np.stack(lows), axis=0))
            p.lines[out] = (geo, hw, [(pick == o).astype(np.float64) for o in range(len(lows))], sure)
        else:
            op = "Silu" if net.roles[k] == "silu" else activations.kind(node)
            p.lines[out] = relax.lines(op, node, p.lo[t], p.hi[t])
    return p.lines[out]


def _bias(p, k):
    """The output of linear node k at a zero input: its bias, broadcast to its output shape."""
    net, node = p.net, p.net.nodes[k]
    if k not in net.biases:
        var = next(i for i in node.input if i in net.live)
        net.biases[k] = layout.forward(node, net.g, net.live, np.zeros(layout.shape(net.g, var)))
    return net.biases[k]


def _constants(node, g, G, live):
    """Σ G ⊙ (the constant inputs of a sum or concatenation), per row."""
    ins = [i for i in node.input if i]
    if all(i in live for i in ins):
        return 0.0
    if node.op_type == "Concat":
        ax = attr(node, "axis", 0) % G.ndim
        parts = np.split(G, np.cumsum([g.shape(i)[ax] for i in ins])[:-1], axis=ax)
        return sum((part * g.const(i)).reshape(G.shape[0], -1).sum(1) for i, part in zip(ins, parts) if i not in live)
    total = 0.0
    for j, i in enumerate(ins):
        if i not in live:
            sign = -1.0 if (node.op_type == "Sub" and j == 1) else 1.0
            c = np.broadcast_to(g.const(i).astype(np.float64), G.shape[1:])
            total = total + sign * (G * c).reshape(G.shape[0], -1).sum(1)
    return total


UNRELAXED = {"product", "softmax", "layernorm", "lrn"}  # lines from their own modules, else the mean-value form


class Unrelaxed(Exception):
    """The walk back from t began at a softmax (nothing linear before its mean-value form), or
    met an interval Jacobian that is not finite."""


def lower(p, t, G, slopes=None, tape=None, extra=None):
    """(Λ, β): ``Σ G ⊙ t(x') ≥ Λ·x' + β`` for every x' in the input set, Λ (m, input size).
    ``slopes`` {activation output: (m, *shape)} replaces the lower lines' slopes (each in its
    sound range, :mod:`.alpha`); ``tape`` (a list) receives (node index, rows) per node walked;
    ``extra`` {tensor: rows} adds rows at those tensors (the bound is then of Σ G ⊙ t plus theirs)."""
    net, inp = p.net, p.net.g.input
    m = G.shape[0]
    beta = np.zeros(m)
    if t == inp:
        return G.reshape(m, -1), beta
    grads, past = {t: G}, np.zeros((m, p.a.size))

    def push(name, L):
        grads[name] = grads[name] + L if name in grads else L

    for k in range(net.producer[t], -1, -1):
        node, role = net.nodes[k], net.roles[k]
        out = node.output[0]
        if extra and out in extra:
            push(out, extra[out])
        if out not in grads:
            continue
        L = grads.pop(out)
        if tape is not None:
            tape.append((k, L))
        if role in ("act", "silu"):
            al, bl, au, bu = _lines(p, k)
            al = al if slopes is None else slopes.get(out, al)
            pos, neg = np.maximum(L, 0.0), np.minimum(L, 0.0)
            beta += (pos * bl + neg * bu).reshape(m, -1).sum(1)
            push(net.tensor_input(k), pos * al + neg * au)
        elif role == "maxpool":
            geo, hw, picks, sure = _lines(p, k)
            pos, neg = np.maximum(L, 0.0), np.minimum(L, 0.0)
            sel = pos + neg * sure
            beta += (neg * ~sure * p.hi[out]).reshape(m, -1).sum(1)
            zero = np.zeros_like(picks[0])
            push(node.input[0], grid.max_pool_adjoint(sel, np.zeros_like(sel), [(w, zero) for w in picks], geo, hw)[0])
        elif role == "layernorm" and out in p.lines:
            rows, shift = lnrelax.lower(p, node, L)
            beta += shift
            push(node.input[0], rows)
        elif role == "product":
            parts, shift = prodrelax.lower(p, node, L)
            beta += shift
            for name, rows in parts:
                push(name, rows)
        elif role in UNRELAXED:  # the mean-value form from here back (:mod:`.meanvalue`)
            if k == net.producer[t]:
                raise Unrelaxed(role)  # nothing linear before it: the mean-value form of t itself
            try:
                lam, b0 = meanvalue.lower(p, out, L)
            except meanvalue.Loose:
                if role != "softmax":
                    raise Unrelaxed(role) from None
                lam, b0 = np.zeros((m, p.a.size)), np.full(m, -np.inf)
            if role == "softmax":  # the constant min over the softmax's rows where it beats the line
                lam, b0 = _simplex_stop(p, node, L, lam, b0)
            past, beta = past + lam, beta + b0
        elif role == "move":
            push(node.input[0], moves.move_back(node, net.g, L, node.input[0]))
        elif role == "combine":
            beta += _constants(node, net.g, L, net.live)
            for name, part in moves.combine_back(node, net.g, L, net.live):
                push(name, part)
        else:
            var = next(i for i in node.input if i in net.live)
            beta += (L * _bias(p, k)).reshape(m, -1).sum(1)
            push(var, layout.adjoint(node, net.g, net.live, L))
    L = grads.get(inp)
    return past + (0.0 if L is None else L.reshape(m, -1)), beta


def _simplex_stop(p, node, L, lam, b0):
    """Rows L at a softmax's output: per row, the line (lam, b0) or the constant
    Σ min over {l ≤ p ≤ u, Σ p = 1} of L·p (:mod:`.simplex`), whichever is larger on the set."""
    g, out = p.net.g, node.output[0]
    m, rank = L.shape[0], len(g.shape(out))
    ax = layout.axis(attr(node, "axis", -1), rank)
    lo, hi = (np.moveaxis(layout.full(d[out], g, out), ax, -1) for d in (p.lo, p.hi))
    const = simplex.least(np.moveaxis(layout.full(L, g, out), ax, -1), lo, hi).reshape(m, -1).sum(1)
    with np.errstate(invalid="ignore", over="ignore"):
        line = lam @ p.x.reshape(-1) + b0 + np.minimum(lam * p.a, lam * p.b).sum(1)
        if p.ball is not None:
            line = np.maximum(line, lam @ p.x.reshape(-1) + b0 - np.linalg.norm(lam, axis=1) * p.ball)
    use = const > np.where(np.isnan(line), -np.inf, line)
    return np.where(use[:, None], 0.0, lam), np.where(use, const, b0)


def bounds(p, t, G, upper=True):
    """(low, up) per row of G: ``low ≤ Σ G ⊙ t(x') ≤ up`` on the input set (box and, when
    the pass has one, the ℓ2 ball); ``up`` is None unless ``upper``. Where no linear bound is
    found (:class:`Unrelaxed`, or a relaxation of intervals too wide to give a number) the
    bounds are ±inf, so intersecting with them changes nothing."""
    m = G.shape[0]
    try:
        Lam, beta = lower(p, t, np.concatenate([G, -G]) if upper else G)
    except Unrelaxed:  # t is a softmax's output, or the bounds before it are not finite: nothing lost
        return np.full(m, -np.inf), (np.full(m, np.inf) if upper else None)
    with np.errstate(invalid="ignore", over="ignore"):
        at = Lam @ p.x.reshape(-1) + beta
        low = at + np.minimum(Lam * p.a, Lam * p.b).sum(1)
        if p.ball is not None:  # the exact minimum over the ball ∩ box (:mod:`.ballbox`)
            low = np.maximum(low, at + ballbox.lowest(Lam, p.a, p.b, p.ball)[0])
    low = np.where(np.isnan(low), -np.inf, low)  # relaxations of intervals too wide: no bound
    return (low[:m], -low[m:]) if upper else (low, None)


def settle_pool(p, t, geo, masks, out_hw, chunk, allow=len):
    """Candidate masks of a max pool with the cells that cannot hold the window's maximum
    removed: cell c of a window is dropped where CROWN proves v_k* − v_c > 0 on the whole set
    (k* the cell with the largest lower end), which interval arithmetic on v_k* and v_c alone
    cannot see when their intervals overlap. Cells constant on the set are left as they are;
    only the first ``allow(number of candidate rows)`` rows are tried."""
    lo, hi = p.lo[t], p.hi[t]
    offs = grid.offsets(geo)
    pick = np.argmax(np.stack(grid.windows(lo, geo, out_hw, -np.inf)), axis=0)
    count = sum(m.astype(np.int64) for m in masks)
    rows = []
    for o, live in enumerate(grid.windows((hi > lo).astype(np.float64), geo, out_hw)):
        for _, c, *pos in np.argwhere(masks[o] & (pick != o) & (count > 1) & (live > 0)):
            rows.append((o, c, tuple(pos), pick[(0, c, *pos)]))
    rows = rows[: allow(len(rows))]
    for n in range(0, len(rows), chunk):
        part = rows[n : n + chunk]
        G = np.zeros((len(part), *lo.shape[1:]))
        for r, (o, c, pos, q) in enumerate(part):
            for off, sign in ((q, 1.0), (o, -1.0)):
                G[(r, c, *grid.source(geo, pos, offs[off]))] += sign
        low = bounds(p, t, G, upper=False)[0]
        for (o, c, pos, _), v in zip(part, low):
            if v > 0:
                masks[o][(0, c, *pos)] = False
    return masks, sum(m.astype(np.int64) for m in masks)
