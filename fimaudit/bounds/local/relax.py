r"""Linear relaxations of pointwise activations on an interval of pre-activations [l, u]:
slopes and intercepts (α_l, β_l, α_u, β_u) with ``α_l z + β_l ≤ σ(z) ≤ α_u z + β_u`` for every
z in [l, u], elementwise.

* ReLU on an unstable unit (l < 0 < u): the upper chord ``u (z − l) / (u − l)`` and the lower
  line ``α z`` with the adaptive slope α = 1 when u ≥ −l, else 0 (CROWN's choice, which keeps
  the area between the lines smallest). LeakyReLU(a) with a ≤ 1 is convex the same way (chord
  above, slope 1 or a through 0 below); with a > 1 it is concave and the roles swap.
* Sigmoid, Tanh, GELU, SiLU: both lines have the chord's slope s; their intercepts bound
  h(z) = σ(z) − s z on [l, u]. h is sampled at K equally spaced points (spacing Δ) and, since
  |h''| = |σ''| ≤ M₂, h lies within M₂Δ²/8 of its linear interpolant on every cell, so
  ``min_k h(z_k) − M₂Δ²/8 ≤ h ≤ max_k h(z_k) + M₂Δ²/8`` on [l, u] (plus a rounding slack).
  Where σ is convex on [l, u] the upper line is the chord and the lower one the parallel
  tangent, up to that slack; M₂ = sup|σ''| (sigmoid 1/(6√3), tanh 4/(3√3), GELU 2φ(0),
  SiLU 1/2), rounded up.

Reference: Zhang et al., NeurIPS 2018, "Efficient neural network robustness certification with
general activation functions" (CROWN: linear bounds per activation, adaptive ReLU slope).
"""

from __future__ import annotations

import numpy as np

from ..rules import attr
from . import activations

SAMPLES = 33
CURVATURE = {"Sigmoid": 0.0963, "Tanh": 0.77, "Gelu": 0.8, "gelu_tanh": 0.8, "Silu": 0.501}


def _piecewise(lo, hi, a):
    """max(z, a z) for a ≤ 1 (convex), min(z, a z) for a > 1 (concave): slopes 1 on z ≥ 0, a below."""
    on, off = lo >= 0, hi <= 0
    width = np.where(on | off, 1.0, hi - lo)
    chord = np.where(on | off, 0.0, (hi - a * lo) / width)
    free = np.where(hi >= -lo, 1.0, a)  # the slope of the line through 0, either end works
    stable = np.where(on, 1.0, a)
    cross = ~(on | off)
    line_c, cut = np.where(cross, chord, stable), np.where(cross, hi - chord * hi, 0.0)
    line_f = np.where(cross, free, stable)
    zero = np.zeros_like(lo)
    if a <= 1:
        return line_f, zero, line_c, cut
    return line_c, cut, line_f, zero


def _smooth(op, node, lo, hi):
    width = hi - lo
    fl, fh = activations.value(op, node, lo), activations.value(op, node, hi)
    mid = (lo + hi) / 2
    prime = {
        "Sigmoid": lambda z: activations.expit(z) * (1 - activations.expit(z)),
        "Tanh": lambda z: 1 - np.tanh(z) ** 2,
        "Gelu": activations.gelu_prime,
        "gelu_tanh": activations.gelu_tanh_prime,
        "Silu": activations.silu_prime,
    }[op]
    narrow = width <= 1e-6 * (1 + np.abs(mid))
    s = np.where(narrow, prime(mid), (fh - fl) / np.where(narrow, 1.0, width))
    k = np.linspace(0.0, 1.0, SAMPLES).reshape((-1,) + (1,) * lo.ndim)
    z = lo + k * width
    h = activations.value(op, node, z) - s * z
    slack = CURVATURE[op] * (width / (SAMPLES - 1)) ** 2 / 8
    slack = slack + 1e-12 * (1 + np.abs(s) * np.maximum(np.abs(lo), np.abs(hi)) + np.abs(h).max(0))
    return s, h.min(0) - slack, s, h.max(0) + slack


def lines(op, node, lo, hi):
    """(α_l, β_l, α_u, β_u), each shaped like lo, for the activation ``op`` (as
    :func:`.activations.kind` names it; "Silu" for x·sigmoid(x)) on [lo, hi]."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if op == "Relu":
        return _piecewise(lo, hi, 0.0)
    if op == "LeakyRelu":
        return _piecewise(lo, hi, float(attr(node, "alpha", 0.01)))
    return _smooth(op, node, lo, hi)
