r"""Convolution and pooling on NCHW grids in numpy, forward and transposed (adjoint).

A 2-D convolution ``y[n, m, p, q] = Σ_{c,i,j} W[m, c, i, j] · x_pad[n, c, p s + i d, q s + j d]``
is computed as a sum over the kernel offsets (i, j) of a channel contraction of a strided
slice of the padded input; its adjoint, which carries a row of a Jacobian from the output
back to the input (a transposed convolution), scatters the same slices back. Pools use the
same offsets: an average pool is a depthwise sum divided by the window's count, a max pool
compares the slices.

Reference: Dumoulin & Visin, 2016, "A guide to convolution arithmetic for deep learning".
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOnnxOpError
from ..rules import attr


def geometry(node, in_shape, out_shape, kernel):
    """(kernel, strides, dilations, pads (top, left, bottom, right) extended so every output
    window fits: ceil-mode windows that run past the declared pads get extra end padding)."""
    if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET", "VALID", b"VALID"):
        raise UnsupportedOnnxOpError(
            f"{node.op_type} node {node.name!r} uses auto_pad={attr(node, 'auto_pad', '')}: local bounds need "
            "explicit pads (export with padding given as numbers); the global lipschitz_bound still works"
        )
    nd = len(kernel)
    if nd != 2:
        raise UnsupportedOnnxOpError(
            f"{node.op_type} node {node.name!r} works on {nd}-D grids: local bounds handle 2-D (NCHW) only; "
            "the global lipschitz_bound still works"
        )
    s = list(attr(node, "strides", [1] * nd))
    d = list(attr(node, "dilations", [1] * nd))
    p = list(attr(node, "pads", [0] * 2 * nd))
    for a in range(nd):  # extra padding at the end for windows a ceil-mode output reaches
        need = (out_shape[2 + a] - 1) * s[a] + d[a] * (kernel[a] - 1) + 1
        p[nd + a] = max(p[nd + a], need - in_shape[2 + a] - p[a])
    return list(kernel), s, d, p


def _slices(geo, out_hw):
    k, s, d, _ = geo
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
    p = geo[3]
    return np.pad(x, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])), constant_values=value)


def crop(xp, geo, in_hw):
    p = geo[3]
    return xp[:, :, p[0] : p[0] + in_hw[0], p[1] : p[1] + in_hw[1]]


def conv(x, W, geo, group, out_hw):
    """y = W ⋆ x (no bias), x (n, C, H, W), W (M, C/group, kh, kw)."""
    xp = pad(x, geo)
    n, M = x.shape[0], W.shape[0]
    cg, mg = W.shape[1], M // group
    y = np.zeros((n, M, *out_hw))
    for i, j, sl in _slices(geo, out_hw):
        part = xp[sl]
        for g in range(group):
            xs = part[:, g * cg : (g + 1) * cg]
            y[:, g * mg : (g + 1) * mg] += np.moveaxis(
                np.tensordot(xs, W[g * mg : (g + 1) * mg, :, i, j], axes=([1], [1])), -1, 1
            )
    return y


def conv_adjoint(G, W, geo, group, in_hw):
    """Gᵀ ↦ (W ⋆)ᵀ G: the rows G (m, M, Ho, Wo) of a Jacobian carried to the conv's input
    (channels-last inside, so each kernel offset is one matrix product)."""
    m, M, Ho, Wo = G.shape
    cg, mg = W.shape[1], M // group
    p = geo[3]
    Gl = np.ascontiguousarray(np.moveaxis(G, 1, -1))  # (m, Ho, Wo, M)
    out = np.zeros((m, in_hw[0] + p[0] + p[2], in_hw[1] + p[1] + p[3], cg * group))
    for i, j, sl in _slices(geo, (Ho, Wo)):
        view = out[:, sl[2], sl[3]]
        for g in range(group):
            view[..., g * cg : (g + 1) * cg] += Gl[..., g * mg : (g + 1) * mg] @ W[g * mg : (g + 1) * mg, :, i, j]
    return np.moveaxis(out, -1, 1)[:, :, p[0] : p[0] + in_hw[0], p[1] : p[1] + in_hw[1]]


def _add_at(out, sl, v):
    view = out[sl]
    view += v


def sum_pool(x, geo, out_hw):
    xp = pad(x, geo)
    y = np.zeros((*x.shape[:2], *out_hw))
    for _, _, sl in _slices(geo, out_hw):
        y += xp[sl]
    return y


def sum_pool_adjoint(G, geo, in_hw):
    p = geo[3]
    out = np.zeros((*G.shape[:2], in_hw[0] + p[0] + p[2], in_hw[1] + p[1] + p[3]))
    for _, _, sl in _slices(geo, G.shape[2:]):
        _add_at(out, sl, G)
    return crop(out, geo, in_hw)


def avg_divisor(node, in_shape, geo, out_hw):
    """The count each average-pool window divides by (1, 1, Ho, Wo): its cells inside the
    input, plus the declared pads when count_include_pad = 1 (never the ceil-mode extra)."""
    ones = np.ones((1, 1, *in_shape[2:]))
    if attr(node, "count_include_pad", 0):
        p = list(attr(node, "pads", [0, 0, 0, 0]))
        ones = np.pad(ones, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])), constant_values=1.0)
        geo = (geo[0], geo[1], geo[2], [0, 0, geo[3][2] - p[2], geo[3][3] - p[3]])
    return sum_pool(ones, geo, out_hw)


def max_candidates(lo, hi, geo, out_hw):
    """Per kernel offset, the mask of outputs whose window cell at that offset is kept as a
    candidate for the window's maximum, and the number of candidates per window: one means
    the window is that cell's value on the whole box. A cell c is dropped where another cell
    c′ has l_c′ ≥ u_c (ties included, e.g. a ReLU's zeros next to a unit that may turn on):
    then v_c′ ≥ v_c on the box, so the window's maximum is the maximum over the rest. Two cells
    that dominate each other are the same constant, and only the later one is dropped; so the
    relation has no cycles, some cell is kept, and every dropped cell is dominated by a kept one."""
    lop, hip = pad(lo, geo, -np.inf), pad(hi, geo, -np.inf)
    lows, highs = zip(*[(lop[sl], hip[sl]) for _, _, sl in _slices(geo, out_hw)])
    masks = []
    for c, (lc, uc) in enumerate(zip(lows, highs)):
        out = np.zeros(uc.shape, dtype=bool)
        for o, (lo_o, hi_o) in enumerate(zip(lows, highs)):
            if o != c:
                out |= (lo_o >= uc) & ((o < c) | (lc < hi_o))
        masks.append(~out)
    return masks, sum(m.astype(np.int64) for m in masks)


def max_pool(x, geo, out_hw):
    xp = pad(x, geo, -np.inf)
    y = np.full((*x.shape[:2], *out_hw), -np.inf)
    for _, _, sl in _slices(geo, out_hw):
        y = np.maximum(y, xp[sl])
    return y


def max_pool_adjoint(Gm, Gr, weights, geo, in_hw):
    """Rows (Gm ± Gr) carried back through a max pool whose offset weights are the intervals
    ``weights`` [(mid, rad)] (1 on a window's sure argmax, [0, 1] on each candidate)."""
    p = geo[3]
    size = (*Gm.shape[:2], in_hw[0] + p[0] + p[2], in_hw[1] + p[1] + p[3])
    om, orad = np.zeros(size), np.zeros(size)
    for (wm, wr), (_, _, sl) in zip(weights, _slices(geo, Gm.shape[2:])):
        _add_at(om, sl, Gm * wm)
        _add_at(orad, sl, np.abs(Gm) * wr + Gr * (np.abs(wm) + wr))
    return crop(om, geo, in_hw), crop(orad, geo, in_hw)


def kernel_of(node):
    """The kernel shape of a pool node."""
    k = attr(node, "kernel_shape", None)
    if k is None:
        raise UnsupportedOnnxOpError(f"{node.op_type} node {node.name!r} has no kernel_shape")
    return list(k)
