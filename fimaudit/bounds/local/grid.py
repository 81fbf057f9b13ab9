r"""Convolution and pooling on NCL and NCHW grids in numpy, forward and transposed (adjoint).

A 2-D convolution ``y[n, m, p, q] = Σ_{c,i,j} W[m, c, i, j] · x_pad[n, c, p s + i d, q s + j d]``
is computed as a sum over the kernel offsets (i, j) of a channel contraction of a strided
slice of the padded input; its adjoint, which carries a row of a Jacobian from the output
back to the input (a transposed convolution), scatters the same slices back. Pools use the
same offsets: an average pool is a depthwise sum divided by the window's count, a max pool
compares the slices.

A 1-D grid (N, C, L) is the 2-D grid (N, C, 1, L) of height 1: :func:`geometry` maps a kernel
(k), strides (s), dilations (d) and pads (b, e) to (1, k), (1, s), (1, d) and (0, b, 0, e), the
same convolution term by term, and every function here takes and returns arrays of the grid's
own rank (the extents ``hw`` it is given, one entry or two), lifting them inside.

Reference: Dumoulin & Visin, 2016, "A guide to convolution arithmetic for deep learning".
"""

from __future__ import annotations

import functools

import numpy as np

from ...errors import UnsupportedOnnxOpError
from ..rules import attr


def _nd(node, nd):
    if nd not in (1, 2):
        raise UnsupportedOnnxOpError(
            f"{node.op_type} node {node.name!r} works on {nd}-D grids: local bounds handle 1-D (NCL) and 2-D (NCHW) "
            "grids only; the global lipschitz_bound still works"
        )
    return nd


def _pads(node, nd):
    """The declared pads as (top, left, bottom, right); a 1-D grid's (b, e) as (0, b, 0, e)."""
    p = list(attr(node, "pads", [0] * 2 * nd))
    return p if nd == 2 else [0, p[0], 0, p[1]]


def geometry(node, in_shape, out_shape, kernel):
    """(kernel, strides, dilations, pads (top, left, bottom, right)) of the 2-D grid, a 1-D one
    as height 1, the pads extended so every output window fits: ceil-mode windows that run past
    the declared pads get extra end padding."""
    if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET", "VALID", b"VALID"):
        raise UnsupportedOnnxOpError(
            f"{node.op_type} node {node.name!r} uses auto_pad={attr(node, 'auto_pad', '')}: local bounds need "
            "explicit pads (export with padding given as numbers); the global lipschitz_bound still works"
        )
    nd = _nd(node, len(kernel))
    lead = [1] * (2 - nd)
    k = lead + list(kernel)
    s = lead + list(attr(node, "strides", [1] * nd))
    d = lead + list(attr(node, "dilations", [1] * nd))
    p = _pads(node, nd)
    ins, outs = _hw(in_shape[2:]), _hw(out_shape[2:])
    for a in range(2):  # extra padding at the end for windows a ceil-mode output reaches
        need = (outs[a] - 1) * s[a] + d[a] * (k[a] - 1) + 1
        p[2 + a] = max(p[2 + a], need - ins[a] - p[a])
    return k, s, d, p


def _hw(hw):
    """Extents of a grid as the 2-D grid's (a 1-D one has height 1)."""
    return (1, *hw) if len(hw) == 1 else tuple(hw)


def lift(x):
    """x (n, C, L) of a 1-D grid (or a 1-D kernel (M, C, k)) as (n, C, 1, L); 2-D as it is."""
    return x[:, :, None] if x.ndim == 3 else x


def _own(y, hw):
    """y (n, C, *2-D extents) in the rank of the grid whose extents are ``hw``."""
    return y.reshape(*y.shape[:2], *hw)


def _slices(geo, out_hw):
    k, s, d, _ = geo
    out_hw = _hw(out_hw)
    for i in range(k[0]):
        for j in range(k[1]):
            yield (
                i,
                j,
                (
                    slice(None),
                    slice(None),
                    slice(i * d[0], i * d[0] + s[0] * (out_hw[0] - 1) + 1, s[0]),
                    slice(j * d[1], j * d[1] + s[1] * (out_hw[1] - 1) + 1, s[1]),
                ),
            )


def pad(x, geo, value=0.0):
    """x padded as the 2-D grid (a 1-D grid's x lifted to height 1)."""
    p = geo[3]
    return np.pad(lift(x), ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])), constant_values=value)


def crop(xp, geo, in_hw):
    p, hw = geo[3], _hw(in_hw)
    return _own(xp[:, :, p[0] : p[0] + hw[0], p[1] : p[1] + hw[1]], in_hw)


def windows(x, geo, out_hw, value=0.0):
    """Per kernel offset, the cells of x (padded with ``value``) that each output window reads
    there, (n, C, *out_hw) in the grid's own rank."""
    xp = pad(x, geo, value)
    return [_own(xp[sl], out_hw) for _, _, sl in _slices(geo, out_hw)]


def offsets(geo):
    """The kernel offsets (i, j) in the order of :func:`windows`."""
    return [(i, j) for i, j, _ in _slices(geo, (1, 1))]


def source(geo, pos, off):
    """The input cell (in the grid's own rank) that output window ``pos`` reads at kernel
    offset ``off``, counted without the padding."""
    _, s, d, p = geo
    at = [a * s[x] + i * d[x] - p[x] for x, (a, i) in enumerate(zip((0,) * (2 - len(pos)) + tuple(pos), off))]
    return tuple(at[2 - len(pos) :])


def conv(x, W, geo, group, out_hw):
    """y = W ⋆ x (no bias), x (n, C, *hw), W (M, C/group, *kernel)."""
    xp, W = pad(x, geo), lift(W)
    n, M = x.shape[0], W.shape[0]
    cg, mg = W.shape[1], M // group
    y = np.zeros((n, M, *_hw(out_hw)))
    for i, j, sl in _slices(geo, out_hw):
        part = xp[sl]
        for g in range(group):
            xs = part[:, g * cg : (g + 1) * cg]
            y[:, g * mg : (g + 1) * mg] += np.moveaxis(
                np.tensordot(xs, W[g * mg : (g + 1) * mg, :, i, j], axes=([1], [1])), -1, 1
            )
    return _own(y, out_hw)


def conv_adjoint(G, W, geo, group, in_hw):
    """Gᵀ ↦ (W ⋆)ᵀ G: the rows G (m, M, *out extents) of a Jacobian carried to the conv's input
    (channels-last inside, so each kernel offset is one matrix product)."""
    G, W = lift(G), lift(W)
    m, M, Ho, Wo = G.shape
    cg, mg = W.shape[1], M // group
    p, hw = geo[3], _hw(in_hw)
    Gl = np.ascontiguousarray(np.moveaxis(G, 1, -1))  # (m, Ho, Wo, M)
    out = np.zeros((m, hw[0] + p[0] + p[2], hw[1] + p[1] + p[3], cg * group))
    for i, j, sl in _slices(geo, (Ho, Wo)):
        view = out[:, sl[2], sl[3]]
        for g in range(group):
            view[..., g * cg : (g + 1) * cg] += Gl[..., g * mg : (g + 1) * mg] @ W[g * mg : (g + 1) * mg, :, i, j]
    return _own(np.moveaxis(out, -1, 1)[:, :, p[0] : p[0] + hw[0], p[1] : p[1] + hw[1]], in_hw)


def _add_at(out, sl, v):
    view = out[sl]
    view += v


def _padded(shape, geo, in_hw):
    p, hw = geo[3], _hw(in_hw)
    return np.zeros((*shape[:2], hw[0] + p[0] + p[2], hw[1] + p[1] + p[3]))


def sum_pool(x, geo, out_hw):
    return sum(windows(x, geo, out_hw))


def sum_pool_adjoint(G, geo, in_hw):
    out, G = _padded(G.shape, geo, in_hw), lift(G)
    for _, _, sl in _slices(geo, G.shape[2:]):
        _add_at(out, sl, G)
    return crop(out, geo, in_hw)


def avg_divisor(node, in_shape, geo, out_hw):
    """The count each average-pool window divides by (1, 1, *out_hw): its cells inside the
    input, plus the declared pads when count_include_pad = 1 (never the ceil-mode extra)."""
    ones = np.ones((1, 1, *_hw(in_shape[2:])))
    if attr(node, "count_include_pad", 0):
        p = _pads(node, len(in_shape) - 2)
        ones = np.pad(ones, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])), constant_values=1.0)
        geo = (geo[0], geo[1], geo[2], [0, 0, geo[3][2] - p[2], geo[3][3] - p[3]])
    return _own(sum_pool(ones, geo, _hw(out_hw)), out_hw)


def max_candidates(lo, hi, geo, out_hw):
    """Per kernel offset, the mask of outputs whose window cell at that offset is kept as a
    candidate for the window's maximum, and the number of candidates per window: one means
    the window is that cell's value on the whole box. A cell c is dropped where another cell
    c′ has l_c′ ≥ u_c (ties included, e.g. a ReLU's zeros next to a unit that may turn on):
    then v_c′ ≥ v_c on the box, so the window's maximum is the maximum over the rest. Two cells
    that dominate each other are the same constant, and only the later one is dropped; so the
    relation has no cycles, some cell is kept, and every dropped cell is dominated by a kept one."""
    lows, highs = windows(lo, geo, out_hw, -np.inf), windows(hi, geo, out_hw, -np.inf)
    masks = []
    for c, (lc, uc) in enumerate(zip(lows, highs)):
        out = np.zeros(uc.shape, dtype=bool)
        for o, (lo_o, hi_o) in enumerate(zip(lows, highs)):
            if o != c:
                out |= (lo_o >= uc) & ((o < c) | (lc < hi_o))
        masks.append(~out)
    return masks, sum(m.astype(np.int64) for m in masks)


def max_pool(x, geo, out_hw):
    cells = windows(x, geo, out_hw, -np.inf)
    return functools.reduce(np.maximum, cells[1:], cells[0])


def max_pool_adjoint(Gm, Gr, weights, geo, in_hw):
    """Rows (Gm ± Gr) carried back through a max pool whose offset weights are the intervals
    ``weights`` [(mid, rad)] (1 on a window's sure argmax, [0, 1] on each candidate)."""
    om, orad = _padded(Gm.shape, geo, in_hw), _padded(Gm.shape, geo, in_hw)
    Gm, Gr = lift(Gm), lift(Gr)
    for (wm, wr), (_, _, sl) in zip(weights, _slices(geo, Gm.shape[2:])):
        wm, wr = lift(wm), lift(wr)
        _add_at(om, sl, Gm * wm)
        _add_at(orad, sl, np.abs(Gm) * wr + Gr * (np.abs(wm) + wr))
    return crop(om, geo, in_hw), crop(orad, geo, in_hw)


def kernel_of(node):
    """The kernel shape of a pool node."""
    k = attr(node, "kernel_shape", None)
    if k is None:
        raise UnsupportedOnnxOpError(f"{node.op_type} node {node.name!r} has no kernel_shape")
    return list(k)
