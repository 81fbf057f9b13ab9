r"""A pass on a set inside a set already bounded. For B' ⊆ B (the same input x, a smaller ℓ2
ball inside the same box and input domain) every interval a pass proved on B holds on B' too,
so the pass on B' intersects each node output's interval with B's as soon as interval
arithmetic has given it, before any tightening or relaxation reads it. The intersection of two
enclosures of the same set of values is an enclosure, so every bound stays sound; a ReLU that
B's intervals settle is settled on B' and needs no tightening row, and every later interval
starts from the narrower of the two.

The intervals are never wider than those of either pass alone at the node where they are
intersected; the final bounds are in practice as tight or tighter, but not provably so, since a
CROWN lower line of an unstable ReLU (:mod:`.relax`) is chosen from its interval and a narrower
interval may pick another line.

Reference: Wang et al., NeurIPS 2021, "Beta-CROWN: efficient bound propagation with per-neuron
split constraints for neural network robustness verification" (a subdomain keeps the
intermediate bounds of the domain it was split from).
"""

from __future__ import annotations

import numpy as np

from .engine import Pass


def intervals(p):
    """{tensor: (low, high)} of a finished pass, to bound a pass on a subset of its set."""
    return {t: (p.lo[t], p.hi[t]) for t in p.lo}


class NestedPass(Pass):
    """:class:`.engine.Pass` on a subset of the set whose :func:`intervals` are ``outer``."""

    def __init__(self, net, x, low, high, outer, **kw):
        self.outer = outer
        super().__init__(net, x, low, high, **kw)

    def _forward(self, k, node, role):
        super()._forward(k, node, role)
        out = node.output[0]
        if out in self.outer:
            lo, hi = self.outer[out]
            self.lo[out], self.hi[out] = np.maximum(self.lo[out], lo), np.minimum(self.hi[out], hi)
