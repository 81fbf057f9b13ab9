r"""Optimised lower slopes of ReLU and LeakyReLU (α-CROWN) for the linear bounds of :mod:`.crown`.

On an unstable unit (l < 0 < u) every line ``α z`` with α ∈ [a, 1] lies below LeakyReLU(a)
(a ≤ 1; ReLU: a = 0) on [l, u], so the CROWN bound stays sound for any choice of α per row
and per unit; CROWN's adaptive slope is one point of that range. The concrete lower bound

``f(α) = min_{x' ∈ B} Λ(α)·x' + β(α)``

is maximised over α by projected gradient ascent (Adam), starting from CROWN's slopes; every
iterate is a valid bound, so the best per row is returned (never below CROWN's).

The gradient: by Danskin's theorem ∂f/∂Λ = x + d* (d* the minimiser over the box, or the
ball ∩ box of :func:`.ballbox.lowest`) and ∂f/∂β = 1. The walk back from t is recorded (a
tape of the nodes and of the rows L arriving at each) and replayed forward from the input with
the adjoint v = x + d*: a linear node maps v ↦ A v + b (its forward map, bias included, which
is the transpose of Λ ↦ Λ A plus the bias' share of β), moves and sums act forward, an
activation gives ``v_out = α_l v + β_l`` where L ≥ 0 and ``α_u v + β_u`` where L < 0, and a max
pool selects each window's chosen cell (where L < 0 on a window with several candidates, its
constant upper end). At an activation, ``∂f/∂α = max(L, 0) ⊙ v_in`` (v_in the adjoint at its
input). Only walks through linear nodes, moves, sums, ReLU/LeakyReLU(a ≤ 1) and max pools are
optimised, and only where n steps of all the rows cost at most :data:`WORK` multiply-adds
(one walk back from t per row and step, :func:`.budget.prefix`) and the graph is not heavy
(:func:`.budget.heavy`); elsewhere plain CROWN.

On a subdomain of :mod:`.branch` (units split into z_k ≥ 0 or z_k ≤ 0) each split unit also
gets a multiplier β_k ≥ 0 (β-CROWN): f ≥ f − β_k z_k where z_k ≥ 0 and f ≥ f + β_k z_k where
z_k ≤ 0, so the rows ``β ⊙ (below − above)`` added at z_k keep the bound sound for every β ≥ 0,
and the bound, minimised over the whole ball, regains some of what the split discards. Its
gradient is ``(below − above) ⊙ v_z`` (v_z the adjoint at z_k); β is projected onto [0, ∞).
A subdomain's ascent may start from the slopes and multipliers its parent ended at (clipped
to its own ranges, so still sound) and stop once every margin is proven.

References: Xu et al., ICLR 2021, "Fast and complete: enabling complete neural network
verification with rapid and massively parallel incomplete verifiers" (α-CROWN); Kingma & Ba,
ICLR 2015 (Adam); Wang et al., NeurIPS 2021 (β-CROWN: split multipliers).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import InvalidArgumentError
from ..rules import attr
from . import activations, ballbox, crown, grid, layout, moves

STEP, DECAY, BETAS = 0.5, 0.98, (0.9, 0.999)  # Adam on α ∈ [a, 1]: a step of up to 0.5, decaying
WORK = 1e10  # the most multiply-adds of one optimisation, steps × rows × W(t) (:mod:`.budget`)


def steps(n):
    """The iteration count ``n`` checked: an integer in [0, 1000] (0: plain CROWN)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= 1000:
        raise InvalidArgumentError(f"alpha must be an integer count of ascent steps in [0, 1000] (0: off), got {n!r}")
    return int(n)


def _leak(node):
    return 0.0 if node.op_type == "Relu" else float(attr(node, "alpha", 0.01))


def _ranges(p, t):
    """{activation output: (k, lowest slope, highest slope)} for the walk back from t, or None
    when the walk meets a node this module does not optimise."""
    net, found = p.net, {}
    for k in range(net.producer[t] + 1):
        node, role = net.nodes[k], net.roles[k]
        if role == "act":
            if activations.kind(node) not in ("Relu", "LeakyRelu") or _leak(node) > 1:
                return None
            al = crown._lines(p, k)[0]
            z = net.tensor_input(k)
            free = (p.lo[z] < 0) & (p.hi[z] > 0)
            found[node.output[0]] = (k, np.where(free, _leak(node), al), np.where(free, 1.0, al))
        elif role not in ("linear", "move", "combine", "maxpool"):
            return None
    return found


def _concrete(p, Lam, beta):
    """(low, x + d*) per row: the bound of crown.bounds made concrete, and its gradient in Λ."""
    x = p.x.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        at = Lam @ x + beta
        low = at + np.minimum(Lam * p.a, Lam * p.b).sum(1)
        d = np.where(Lam > 0, p.a, np.where(Lam < 0, p.b, 0.0))
        if p.ball is not None:
            val, dball = ballbox.lowest(Lam, p.a, p.b, p.ball)
            better = at + val > low
            low, d = np.where(better, at + val, low), np.where(better[:, None], dball, d)
    return np.where(np.isnan(low), -np.inf, low), x + d


def _replay(p, tape, slopes, v):
    """({activation output: ∂f/∂α}, {tensor: adjoint}) from the tape of one walk and the adjoint
    v at the input."""
    net, g = p.net, p.net.g
    adj, grads = {g.input: v.reshape(len(v), *layout.shape(g, g.input)[1:])}, {}
    for k, L in reversed(tape):
        node, role, out = net.nodes[k], net.roles[k], net.nodes[k].output[0]
        if role == "act":
            al, bl, au, bu = crown._lines(p, k)
            z = adj[net.tensor_input(k)]
            if out in slopes:
                al = slopes[out]
                grads[out] = np.maximum(L, 0.0) * z
            adj[out] = np.where(L >= 0, al * z + bl, au * z + bu)
        elif role == "maxpool":
            geo, _, picks, sure = crown._lines(p, k)
            cells = grid.windows(adj[node.input[0]], geo, g.shape(out)[2:])  # in the grid's own rank
            sel = sum(w * c for w, c in zip(picks, cells))
            adj[out] = np.where((L >= 0) | sure, sel, p.hi[out])
        elif role == "move":
            adj[out] = moves.move(node, g, adj[node.input[0]])
        elif role == "combine":
            adj[out] = moves.combine(node, g, adj, adj, adj)[0]
        else:
            adj[out] = layout.forward(node, g, net.live, adj[next(i for i in node.input if i in net.live)])
    return grads, adj


def optimise(p, t, G, n, start=None, enough=False):
    """(best lower bound per row of G (m, *shape of t) on the input set after ``n`` Adam steps
    on the slopes, their last values {tensor: (m, …)}), or None when the walk back from t is not
    one this module optimises. ``start`` holds values to begin from (clipped to this set's
    ranges; the rest begin at CROWN's slopes and zero multipliers); with ``enough`` the ascent
    stops once every row's bound is positive."""
    found = _ranges(p, t)
    if not found:
        return None
    m, start = len(G), start or {}
    slopes = {o: np.broadcast_to(crown._lines(p, k)[0], (m, *lo.shape[1:])).copy() for o, (k, lo, _) in found.items()}
    ranges = {o: (lo, hi) for o, (_, lo, hi) in found.items()}
    sign = {z: np.reshape(b.astype(np.float64) - a, p.lo[z].shape) for z, (a, b) in getattr(p, "splits", {}).items()}
    mult = {z: np.zeros((m, *c.shape[1:])) for z, c in sign.items()}  # split multipliers ≥ 0 (:mod:`.branch`)
    ranges.update({z: (0.0, np.where(c != 0, np.inf, 0.0)) for z, c in sign.items()})
    for var in (slopes, mult):
        var.update({o: np.clip(start[o], *ranges[o]) for o in var if o in start})
    mom = {o: (np.zeros_like(s), np.zeros_like(s)) for o, s in (slopes | mult).items()}
    best, lr = np.full(m, -np.inf), STEP
    for i in range(n + 1):
        tape = []
        Lam, beta = crown.lower(p, t, G, slopes, tape, {z: mult[z] * c for z, c in sign.items()})
        low, v = _concrete(p, Lam, beta)
        best = np.maximum(best, low)
        if i == n or not np.all(np.isfinite(v)) or (enough and np.all(best > 0)):
            break
        grads, adj = _replay(p, tape, slopes, v)
        grads.update({z: c * adj[z] for z, c in sign.items() if z in adj})
        for o, (lo, hi) in ranges.items():
            if o not in grads:
                continue
            gr = np.clip(np.nan_to_num(grads[o]), -1e100, 1e100)  # no overflow in its square
            m1, m2 = mom[o]
            m1[:] = BETAS[0] * m1 + (1 - BETAS[0]) * gr
            m2[:] = BETAS[1] * m2 + (1 - BETAS[1]) * gr**2
            hat1, hat2 = m1 / (1 - BETAS[0] ** (i + 1)), m2 / (1 - BETAS[1] ** (i + 1))
            var = slopes if o in slopes else mult
            var[o] = np.clip(var[o] + lr * hat1 / (np.sqrt(hat2) + 1e-12), lo, hi)
        lr *= DECAY
    return best, slopes | mult


def lower(p, t, G, n, start=None, enough=False):
    """(lower bounds of the rows G on the input set, the slopes they end at or None): the
    ascent of :func:`optimise` where it applies and its work fits, plain CROWN elsewhere."""
    if n > 0 and not p.net.heavy and n * len(G) * p.net.work.get(t, math.inf) <= WORK:
        try:
            found = optimise(p, t, G, n, start, enough)
        except crown.Unrelaxed:
            found = None
        if found is not None:
            return found
    return crown.bounds(p, t, G, False)[0], None


def bounds(p, t, G, n, upper=True):
    """:func:`.crown.bounds` with the lower slopes optimised by ``n`` steps (0: plain CROWN)."""
    m = len(G)
    low = lower(p, t, np.concatenate([G, -G]) if upper else G, n)[0]
    return (low[:m], -low[m:]) if upper else (low, None)
