r"""Branch and bound on unstable ReLUs for the margin certificate of one ℓ2 ball B around x.

B is certified when every margin m_j = z_top − z_j has a positive lower bound on B. Where the
CROWN bounds of :mod:`.crown` on B leave some margin unproven, an unstable unit z_k (l < 0 < u
on B) splits B into ``B⁺ = B ∩ {z_k ≥ 0}`` and ``B⁻ = B ∩ {z_k ≤ 0}``, whose union is B: if
every margin is positive on both, it is positive on B. On B⁺ the unit's interval is [0, u] and
its ReLU is the identity, on B⁻ it is [l, 0] and the ReLU is zero (LeakyReLU: a z), so both
lose the relaxation's gap at that unit; every interval after it is bounded again by CROWN on
the smaller set, intersected with the intervals of the set it was split from (:mod:`.nested`:
B⁺ ⊆ B). Each pass bounds its set from the same x and ball, so every bound is a bound on a
superset of the subdomain: sound.

A subdomain is neither convex nor sure to hold x, so the mean-value form (which integrates
the Jacobian along the segment from x) is not used on it: its intervals come from CROWN alone,
and only networks whose nonlinearities are ReLU, LeakyReLU and max pools are split.

The unit split is the one with the largest share of the unproven margins' lost bound: for a
row L arriving at an unstable ReLU's output, its upper line ``u (z − l) / (u − l)`` costs
``max(−L, 0) · (−u l / (u − l))`` in the bound (the BaBSR score's intercept term). Subdomains
are taken lowest margin bound first; the search stops, refusing B, after ``budget`` passes.
A subdomain's margin ascent starts from the slopes and multipliers its parent ended at and
stops once its margins are proven (:func:`.slopes.lower`).

References: Bunel et al., JMLR 2020, "Branch and bound for piecewise linear neural network
verification" (BaBSR); Wang et al., NeurIPS 2021 (β-CROWN: subdomains keep the bounds of the
domain they were split from, and their margins' split multipliers, :mod:`.slopes`).
"""

from __future__ import annotations

import heapq

import numpy as np

from ...errors import InvalidArgumentError
from . import activations, crown, nested, slopes
from .nested import NestedPass

SPLITTABLE = ("linear", "move", "combine", "maxpool")
MOST = 1_000_000  # subdomain passes per ball, at most


def budget(n):
    """The subdomain count ``n`` checked: an integer in [0, :data:`MOST`] (0: no branching)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= MOST:
        raise InvalidArgumentError(f"branches must be an integer count of subdomains in [0, {MOST}] (0: off): {n!r}")
    return int(n)


def splittable(net):
    """Whether every nonlinearity of the network is a ReLU, a LeakyReLU or a max pool."""
    return all(
        r in SPLITTABLE or (r == "act" and activations.kind(n) in ("Relu", "LeakyRelu"))
        for n, r in zip(net.nodes, net.roles)
    )


class SplitPass(NestedPass):
    """A pass on the subdomain of ``outer``'s set where the units ``splits`` {tensor: (above,
    below)} (flat boolean masks) are ≥ 0 and ≤ 0; nodes before ``start`` keep ``outer``, as
    does the split tensor itself (``start`` is the index after its producer): its CROWN bound
    reads only earlier intervals, which are ``outer``'s, so where ``outer`` tightened a unit it
    would only repeat that."""

    def __init__(self, net, x, low, high, outer, splits, start, **kw):
        self.splits, self.start = splits, start
        super().__init__(net, x, low, high, outer, **kw)

    def _tighten(self, t, node, mean_value=True, keep=False):
        if self.net.producer.get(t, -1) >= self.start:
            super()._tighten(t, node, False, False)  # CROWN alone: a subdomain is not convex

    def _forward(self, k, node, role):
        if role == "act":
            t = self.net.tensor_input(k)
            if t in self.splits:
                above, below = (m.reshape(self.lo[t].shape) for m in self.splits[t])
                self.lo[t] = np.where(above, np.maximum(self.lo[t], 0.0), self.lo[t])
                self.hi[t] = np.where(below, np.minimum(self.hi[t], 0.0), self.hi[t])
        super()._forward(k, node, role)


def _margins(p, rows, alpha, start):
    """(lower bounds of the margin rows (m, *shape of the logits) on the pass's set, the slopes
    they end at or None), the ascent starting from ``start`` and stopping once all are proven."""
    return slopes.lower(p, p.net.g.output, rows, alpha, start, enough=True)


def _rows(kept, keep):
    """The rows ``keep`` (sorted indices) of the slopes ``kept`` = (the sorted indices of the
    rows they are for, a superset of ``keep``; {tensor: values}), or None."""
    if kept is None or kept[1] is None:
        return None
    at = np.searchsorted(kept[0], keep)
    return {o: v[at] for o, v in kept[1].items()}


def _choose(p, rows, low):
    """(tensor, flat index) of the unstable ReLU unit with the largest score, or None."""
    tape, best, pick = [], 0.0, None
    try:
        crown.lower(p, p.net.g.output, rows[low <= 0], None, tape)
    except crown.Unrelaxed:
        return None
    for k, L in tape:
        if p.net.roles[k] != "act":
            continue
        t = p.net.tensor_input(k)
        if t == p.net.g.input:
            continue
        lo, hi = p.lo[t].reshape(-1), p.hi[t].reshape(-1)
        free = (lo < 0) & (hi > 0)
        if not free.any():
            continue
        gap = np.where(free, -lo * hi / np.where(free, hi - lo, 1.0), 0.0)
        score = (np.maximum(-L, 0.0).reshape(len(L), -1) * gap).sum(0)
        j = int(np.argmax(score))
        if score[j] > best:
            best, pick = float(score[j]), (t, j)
    return pick


def certify(s, root, rows, low, alpha, budget):
    """Whether branch and bound proves every margin row (m, *shape of the logits) positive on
    the set of ``root``, a finished pass on an ℓ2 ball of the setup s (:class:`.api._Setup`) and
    of a :func:`splittable` network, whose lower bounds there are ``low``, within ``budget``
    passes on subdomains."""
    net, x, lo, hi = s.net, root.x, root.lo[s.g.input], root.hi[s.g.input]
    kw = dict(tighten=s.tighten > 0, limit=s.tighten, ball=root.ball, alpha=0)
    if np.all(low > 0):
        return True
    queue, tick, passes = [(float(low.min()), 0, root, {}, low, None)], 1, 0
    while queue:
        _, _, p, splits, low, kept = heapq.heappop(queue)
        pick = _choose(p, rows, low)
        if pick is None:
            return False
        t, j = pick
        for side in (0, 1):
            if passes >= budget:
                return False
            masks = {k: (a.copy(), b.copy()) for k, (a, b) in splits.items()}
            size = p.lo[t].size
            masks.setdefault(t, (np.zeros(size, bool), np.zeros(size, bool)))[side][j] = True
            child = SplitPass(net, x, lo, hi, nested.intervals(p), masks, net.producer[t] + 1, **kw)
            passes += 1
            sub, todo = low.copy(), np.flatnonzero(low <= 0)
            sub[todo], ended = _margins(child, rows[todo], alpha, _rows(kept, todo))
            if not np.all(sub > 0):
                heapq.heappush(queue, (float(sub.min()), tick, child, masks, sub, (todo, ended)))
                tick += 1
    return True


def margin_rows(z, shape):
    """The margin rows z_top − z_j (C − 1, *shape) of the logits z (flat) at x."""
    C, top = z.size, int(np.argmax(z))
    G = np.zeros((C - 1, C))
    G[:, top], G[np.arange(C - 1), [j for j in range(C) if j != top]] = 1.0, -1.0
    return G.reshape((C - 1, *shape))
