r"""The backward pass of interval Jacobians, with optional generators.

Rows travel as ``(M, R)``: M signed rows, R ≥ 0 radii, meaning every Jacobian row over the box
lies in ``M_0 + Σ_k ε_k M_k ± R`` (ε_k ∈ [−1, 1]), where M_0 are the m primary rows and M_k
(k ≥ 1) are generators: blocks of m rows stacked after them. Linear nodes, moves and sums act
on every signed row exactly (``M ↦ M A``) and on R by magnitudes (``R ↦ R |A|``). A unit whose
derivative is only known to lie in d_mid ± d_rad sends ``M d_mid`` on, and its uncertainty
``M_0 d_rad`` at that unit either becomes a new generator (kept signed through every later
node, so the cancellations of later weights are kept) or, past the ``generators`` budget, is
added to R by magnitude; generators meeting a further uncertain unit add ``|M_k| d_rad`` to R.
A max pool's candidate cell is such a unit with weight 0.5 ± 0.5. The radii a product, softmax or
LayerNormalization leaves (:mod:`.products`, :mod:`.norms`) become generators the same way, the
largest units first (one ε per unit and row: the passes act on each row alone, so sharing an ε
across rows changes nothing). A radius R reaching a tensor t whose bound |∂t/∂x| ≤ K over the box
the forward pass kept goes straight to the input as R K. At the input,
``J_mid = M_0`` and ``J_rad = R + Σ_k |M_k|`` bound every Jacobian over the box elementwise.

With no generators this is plain interval arithmetic (midpoint-radius, Rump 1999); with them it
is a zonotope in the spirit of Singh et al., NeurIPS 2018 ("Fast and effective robustness
certification", DeepZ), applied to the Jacobian as in Shi et al., NeurIPS 2022.
"""

from __future__ import annotations

import numpy as np

from . import grid, layout, lrn, moves, norms, products

ELEMENTS = 1 << 24  # generator rows × tensor size held at once


def backward(p, t, G, generators=0, split=False):
    net, inp = p.net, p.net.g.input
    m = G.shape[0]
    if t == inp:
        J0 = G.reshape(m, -1)
        return (J0, np.zeros_like(J0), np.zeros((0, *J0.shape))) if split else (J0, np.zeros_like(J0))
    grads, made, direct = {t: (G, None)}, [0], 0.0

    def grow(M, rows):  # pad signed rows with zero blocks for generators made elsewhere
        return M if M.shape[0] >= rows else np.concatenate([M, np.zeros((rows - M.shape[0], *M.shape[1:]))])

    def push(name, gm, gr):
        if name in grads:
            om, orad = grads[name]
            n = max(om.shape[0], gm.shape[0])
            gm, gr = grow(om, n) + grow(gm, n), (gr if orad is None else (orad if gr is None else orad + gr))
        grads[name] = (gm, gr)

    def spread(Z, d):  # |M_k| d summed over the generators, onto the m primary rows
        return (np.abs(Z) * d).reshape(-1, m, *Z.shape[1:]).sum(0) if Z.shape[0] else 0.0

    def budget(size):  # generators still allowed: by count, and by the rows the largest tensor can hold
        return max(0, min(generators, ELEMENTS // max(1, m * net.largest)) - made[0])

    for k in range(net.producer[t], -1, -1):
        node, role = net.nodes[k], net.roles[k]
        if node.output[0] not in grads:
            continue
        Gm, Gr = grads.pop(node.output[0])
        if Gr is not None and node.output[0] in p.jac:  # |ρ J_t| ≤ R |∂t/∂x| over the box: straight to the input
            direct = direct + Gr.reshape(m, -1) @ p.jac[node.output[0]]
            Gr = None
        if role in ("act", "silu"):
            dm, dr = p.deriv[node.output[0]]
            rad = None if Gr is None else Gr * (np.abs(dm) + dr)
            M = Gm * dm
            if np.any(dr):
                P, Z, drop = Gm[:m], Gm[m:], dr
                units = np.flatnonzero(dr.reshape(-1) > 0)
                keep = budget(dr.size)
                if keep > 0 and units.size:
                    flat = (P * dr).reshape(m, -1)
                    units = units[np.argsort(-np.abs(flat[:, units]).sum(0))[:keep]]
                    gens = np.zeros((units.size, m, flat.shape[1]))
                    gens[np.arange(units.size), :, units] = flat[:, units].T
                    mask = np.ones(flat.shape[1])
                    mask[units] = 0.0
                    drop = dr * mask.reshape(dr.shape)
                    M = np.concatenate([grow(M, m * (1 + made[0])), gens.reshape(-1, *P.shape[1:])])
                    made[0] += units.size
                loose = np.abs(P) * drop + spread(Z, dr)
                rad = loose if rad is None else rad + loose
            push(net.tensor_input(k), M, rad)
        elif role == "maxpool":
            geo, hw, weights = p.pool[node.output[0]]
            M, rad_all = grid.max_pool_adjoint(Gm, np.zeros_like(Gm), weights, geo, hw)
            P = Gm[:m]
            rad = spread(rad_all[m:], 1.0) if Gm.shape[0] > m else 0.0
            prim = rad_all[:m]
            keep = budget(int(np.prod(hw)) * Gm.shape[1])
            if keep > 0:
                gens, prim = _pool_generators(p, node, P, weights, geo, hw, keep)
                if gens is not None:
                    M = np.concatenate([grow(M, m * (1 + made[0])), gens])
                    made[0] += gens.shape[0] // m
            rad = rad + prim
            if Gr is not None:
                rad = rad + grid.max_pool_adjoint(np.zeros_like(Gr), Gr, weights, geo, hw)[1]
            push(node.input[0], M, rad)
        elif role in ("product", "softmax", "layernorm", "lrn"):
            rule = {"layernorm": norms, "lrn": lrn}.get(role, products)
            for name, gm, gr in rule.backward(p, node, Gm, Gr, m):
                keep = budget(gr.size)
                if keep > 0:  # the largest radii become generators, kept signed through earlier nodes
                    flat = gr.reshape(m, -1)
                    score = flat.sum(0)
                    units = np.argsort(-score)[:keep]
                    units = units[score[units] > 0]
                    gens = np.zeros((units.size, m, flat.shape[1]))
                    gens[np.arange(units.size), :, units] = flat[:, units].T
                    flat = flat.copy()
                    flat[:, units] = 0.0
                    gm = np.concatenate([grow(gm, m * (1 + made[0])), gens.reshape(-1, *gm.shape[1:])])
                    made[0] += units.size
                    gr = flat.reshape(gr.shape)
                push(name, gm, gr)
        elif role == "move":
            v = node.input[0]
            push(v, moves.move_back(node, net.g, Gm, v), None if Gr is None else moves.move_back(node, net.g, Gr, v))
        elif role == "combine":
            parts = moves.combine_back(node, net.g, Gm, net.live)
            rads = (
                moves.combine_back_abs(node, net.g, Gr, net.live) if Gr is not None else [(n, None) for n, _ in parts]
            )
            for (name, gm), (_, gr) in zip(parts, rads):
                push(name, gm, gr)
        else:
            var = next(i for i in node.input if i in net.live)
            rad = None if Gr is None else layout.adjoint(node, net.g, net.live, Gr, absolute=True)
            push(var, layout.adjoint(node, net.g, net.live, Gm), rad)
    Gm, Gr = grads.get(inp, (np.zeros_like(G), None))
    R = direct + (np.zeros((m, p.a.size)) if Gr is None else Gr.reshape(m, -1))
    if split:
        return Gm[:m].reshape(m, -1), R, Gm[m:].reshape(-1, m, p.a.size)
    if Gm.shape[0] > m:
        R = R + spread(Gm[m:].reshape(Gm.shape[0] - m, -1), 1.0)
    return Gm[:m].reshape(m, -1), R


def _pool_generators(p, node, P, weights, geo, hw, keep):
    """Generators for the ambiguous windows, the largest first: a window with two candidate
    cells c, k has derivative e_c or e_k, i.e. ½(e_c + e_k) ± ½(e_c − e_k), one generator that
    keeps the two cells' weights summing to 1; a window with more, one generator per candidate
    cell whose input is not constant on the box (a constant cell is a dead unit's 0, which the
    unit's zero derivative clears). Also the primary rows' remaining radius, at the input."""
    t = node.input[0]
    live = grid.windows((p.hi[t] > p.lo[t]).astype(np.float64), geo, P.shape[2:])
    count = sum((wr > 0).astype(np.int64) for _, wr in weights)[0]  # candidates per window
    picks, pairs, alive = [], {}, []
    for o, ((_, wr), cells) in enumerate(zip(weights, live)):
        amb, on = (wr > 0)[0], (cells > 0)[0]
        alive.append(on)
        for c in map(tuple, np.argwhere(amb & (count == 2))):
            pairs.setdefault(c, []).append(o)
        sel = np.argwhere(amb & (count != 2) & on)
        if len(sel):
            size = np.abs(P[(slice(None), *sel.T)]).sum(0) * wr[(0, *sel.T)]
            picks += [(float(v), (o,), tuple(c)) for v, c in zip(size, sel)]
    for c, offs in pairs.items():
        if alive[offs[0]][c] or alive[offs[1]][c]:
            picks.append((float(np.abs(P[(slice(None), *c)]).sum() * weights[offs[0]][1][(0, *c)]), tuple(offs), c))
    picks.sort(key=lambda v: -v[0])
    chosen = {}
    for _, offs, c in picks[:keep]:
        chosen.setdefault(offs, []).append(c)
    rest = [(np.zeros_like(wm), wr.copy()) for wm, wr in weights]
    for offs, cells in chosen.items():
        for o in offs:
            for c in cells:
                rest[o][1][(0, *c)] = 0.0
    prim = grid.max_pool_adjoint(P, np.zeros_like(P), rest, geo, hw)[1]
    if not chosen:
        return None, prim
    blocks = []
    for offs, cells in chosen.items():
        E = np.zeros((len(cells), *P.shape))
        for n, c in enumerate(cells):
            E[(n, slice(None), *c)] = P[(slice(None), *c)] * weights[offs[0]][1][(0, *c)]
        E = E.reshape(-1, *P.shape[1:])
        sign = {offs[0]: 1.0, **({offs[1]: -1.0} if len(offs) == 2 else {})}
        only = [(np.full_like(w[0], sign.get(j, 0.0)), np.zeros_like(w[0])) for j, w in enumerate(weights)]
        blocks.append(grid.max_pool_adjoint(E, np.zeros_like(E), only, geo, hw)[0])
    return np.concatenate(blocks), prim
