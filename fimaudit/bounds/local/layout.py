r"""How the local engine holds a tensor, and the linear nodes on tensors whose first axis is
not the batch's.

The engine bounds one input at a time, so every tensor's graph shape s has a batch of 1
(:class:`fimaudit.bounds.graph.Graph` infers shapes at batch 1), wherever an exporter has put
that axis (a Transformer's ``(tokens, batch, features)`` layout moves it to the middle, a
multi-head split merges it with the heads). The engine adds its own leading axis of rows (1
for values, one per Jacobian row backward), so a tensor is the array ``(rows, *s)``: the rows
are a separate axis, never the batch one, and since the batch is 1 the element order of each
row is the tensor's own. When ``s[0] = 1`` the engine keeps it as ``(rows, *s[1:])`` (the same
elements: that axis of size 1 is dropped), the layout the convolution and pooling rules expect;
else it keeps ``(rows, *s)``. :func:`full` and :func:`held` convert between the two by a
reshape, and rules that read axes (transposes, gathers, reductions, softmax, normalisation)
work on the full form, with every axis of s shifted by one.
"""

from __future__ import annotations

from . import linear

SPATIAL = {"Conv", "BatchNormalization", "AveragePool", "GlobalAveragePool"}


def shape(graph, name):
    """The shape the engine keeps for tensor ``name``, its first entry standing for the rows."""
    s = tuple(graph.shape(name))
    return s if s[0] == 1 else (1, *s)


def standard(graph, name):
    return graph.shape(name)[0] == 1


def full(x, graph, name, rank=None):
    """x (rows, ...) as (rows, 1, …, 1, *s): s left-padded with ones to ``rank`` axes."""
    s = tuple(graph.shape(name))
    return x.reshape(x.shape[0], *([1] * ((rank or len(s)) - len(s))), *s)


def held(y, graph, name):
    """The full form y (rows, *s) of tensor ``name`` as the engine keeps it."""
    return y.reshape(y.shape[0], *shape(graph, name)[1:])


def axis(a, rank):
    """Attribute axis ``a`` of a tensor of ``rank`` axes, in the full form (rows first)."""
    return a % rank + 1


def unbroadcast(G, graph, name):
    """Full-form rows G (m, *t) of a broadcast result, summed back onto tensor ``name``: over
    the axes its padded shape has as 1 where t does not; then kept as the engine keeps it."""
    s = tuple(graph.shape(name))
    pad = (1,) * (G.ndim - 1 - len(s)) + s
    axes = tuple(a + 1 for a, d in enumerate(pad) if d == 1 and G.shape[a + 1] != 1)
    return held(G.sum(axis=axes, keepdims=True) if axes else G, graph, name)


class _Full:
    """The graph as :mod:`.linear` sees it for a node on full-form tensors: every shape with a
    leading 1 for the rows (reductions read ``lead`` to shift their axes)."""

    lead = 1

    def __init__(self, graph):
        self._g = graph

    def __getattr__(self, name):
        return getattr(self._g, name)

    def shape(self, name):
        return (1, *self._g.shape(name))


def plain(node, graph, live):
    """Whether the node's variable input and its output both keep the batch first."""
    var = next(i for i in node.input if i in live)
    return standard(graph, var) and standard(graph, node.output[0])


def forward(node, graph, live, x, absolute=False):
    """:func:`.linear.forward` on x as the engine keeps it, in whichever form the node needs."""
    if plain(node, graph, live):
        return linear.forward(node, graph, live, x, absolute)
    var = next(i for i in node.input if i in live)
    y = linear.forward(node, _Full(graph), live, full(x, graph, var), absolute)
    return held(y, graph, node.output[0])


def adjoint(node, graph, live, G, absolute=False):
    """:func:`.linear.adjoint` on rows as the engine keeps them."""
    if plain(node, graph, live):
        return linear.adjoint(node, graph, live, G, absolute)
    var = next(i for i in node.input if i in live)
    R = linear.adjoint(node, _Full(graph), live, full(G, graph, node.output[0]), absolute)
    return held(R, graph, var)
