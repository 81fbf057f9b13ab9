r"""How much backward-pass work a local bound may spend on one input.

A backward pass from tensor t to the input walks every node before t, so one row costs about
``W(t) = Σ_{k ≤ producer(t)} size(output_k) · fan_k`` multiply-adds (fan: c_in/group · kernel
size for a Conv, the inner dimension for Gemm/MatMul, 1 otherwise). The logits' interval
Jacobian needs one row per logit and per margin, 2C − 1 rows of W(logits); where that exceeds
:data:`ROWS_WORK` (ImageNet-sized graphs: 150 528 inputs, 1000 classes) the graph is *heavy*:
the Lipschitz bound comes from the magnitude operator of :mod:`.magnitude` (two one-row passes
per power step) instead, and pre-activation tightening and max-pool settling (one row each) get
:data:`TIGHTEN_WORK` in all, spent in graph order. Dropping a tightening row only leaves that
unit's interval as interval arithmetic gave it, so every bound stays sound, only looser.
"""

from __future__ import annotations

import math

ROWS_WORK = 2e10
TIGHTEN_WORK = 5e9


def _fan(node, g):
    if node.op_type == "Conv" and len(node.input) > 1 and g.is_const(node.input[1]):
        return math.prod(g.const(node.input[1]).shape[1:])
    if node.op_type in ("Gemm", "MatMul"):
        return max(g.shape(i)[-1] for i in node.input[:1])
    return 1


def prefix(net):
    """{tensor: W(tensor)} for every node output of the network."""
    total, out = 0.0, {}
    for node in net.nodes:
        total += math.prod(net.g.shape(node.output[0])) * _fan(node, net.g)
        out[node.output[0]] = total
    return out


def heavy(net):
    """Whether the logits' own rows cost more than :data:`ROWS_WORK`."""
    C = math.prod(net.g.shape(net.g.output))
    return (2 * C - 1) * net.work[net.g.output] > ROWS_WORK


def allow(p, t, wanted):
    """How many of ``wanted`` rows at tensor t the pass may still run (all unless heavy); the
    rows granted are charged."""
    if not p.net.heavy:
        return wanted
    cost = p.net.work.get(t, 1.0)
    n = max(0, min(wanted, int((TIGHTEN_WORK - p.spent) // cost)))
    p.spent += n * cost
    return n
