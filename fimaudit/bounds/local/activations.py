r"""Pointwise activations on an interval of pre-activations [l, u]: the value at a point, an
interval for the output, and an interval [min σ', max σ'] for the derivative over [l, u].

* ReLU: σ' = 0 when u ≤ 0 (the unit is off on the whole box, so σ∘z is constant there), 1 when
  l ≥ 0, else [0, 1] (it holds the Clarke derivative at the kink); LeakyReLU(α): α, 1 or
  [min(1, α), max(1, α)].
* Sigmoid, Tanh: σ' is even and decreasing in |z|, so max σ' is taken at the point of [l, u]
  nearest 0 and min σ' at an end.
* GELU (Φ(z) + zφ(z), erf form) and SiLU (s(z)(1 + z(1 − s(z)))): σ'' vanishes at two points
  ±z* only (GELU: σ'' = φ(z)(2 − z²), z* = √2; SiLU: 2 + z(1 − 2s(z)) = 0, z* ≈ 2.3994), so
  the extrema of σ' on [l, u] are among l, u and the z* inside it. The tanh form of GELU is
  handled the same way with its own roots of σ'' (found by bracketing on a fine grid, then
  refined by Brent's method), widened by 1e-9 for the root's error.
* Output intervals: monotone activations map the ends; GELU and SiLU also take their minimum
  when [l, u] holds their minimiser.

Reference: Zhang et al., AAAI 2019, "RecurJac: an efficient recursive algorithm for bounding
Jacobian matrix of neural networks and its applications" (derivative bounds per unit).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import erf, expit

from ..interval_rules import gelu as gelu_interval
from ..rules import attr

SLACK = 1e-9


def _gelu_tanh(z):
    return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))


def _fd(f, z, h=1e-5):  # used only to locate roots; values at roots are recomputed in closed form below
    return (f(z + h) - f(z - h)) / (2 * h)


def gelu_tanh_prime(z):
    c = math.sqrt(2 / math.pi)
    u = c * (z + 0.044715 * z**3)
    t = np.tanh(u)
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z)


def gelu_prime(z):
    return 0.5 * (1 + erf(z / math.sqrt(2))) + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def silu(z):
    return z * expit(z)


def silu_prime(z):
    s = expit(z)
    return s * (1 + z * (1 - s))


@functools.cache
def critical(kind):
    """The points where σ' has its extrema (roots of σ''), and the minimiser of σ."""
    prime = {"gelu": gelu_prime, "gelu_tanh": gelu_tanh_prime, "silu": silu_prime}[kind]
    grid = np.linspace(-6, 6, 12001)
    d2 = _fd(prime, grid)
    roots = [
        brentq(lambda t: float(_fd(prime, np.array(t))), grid[k], grid[k + 1], xtol=1e-14)
        for k in np.flatnonzero(np.sign(d2[:-1]) != np.sign(d2[1:]))
    ]
    g = grid[np.flatnonzero(np.sign(prime(grid[:-1])) != np.sign(prime(grid[1:])))]
    root = brentq(lambda t: float(prime(np.array(t))), g[0] - 1e-2, g[0] + 1e-2, xtol=1e-14) if len(g) else 0.0
    return tuple(roots), root


def _smooth_derivative(prime, roots, lo, hi):
    cands = [prime(lo), prime(hi)]
    dlo, dhi = np.minimum(*cands), np.maximum(*cands)
    for r in roots:
        inside = (lo <= r) & (hi >= r)
        v = float(prime(np.array(r)))
        dlo = np.where(inside, np.minimum(dlo, v - SLACK), dlo)
        dhi = np.where(inside, np.maximum(dhi, v + SLACK), dhi)
    return dlo, dhi


def _even_decreasing(prime, lo, hi):
    near = np.where((lo <= 0) & (hi >= 0), 0.0, np.where(hi < 0, hi, lo))
    return np.minimum(prime(lo), prime(hi)), prime(near)


KINDS = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "Silu"}


def kind(node):
    if node.op_type == "Gelu" and attr(node, "approximate", "none") in (b"tanh", "tanh"):
        return "gelu_tanh"
    return node.op_type


def value(op, node, z):
    if op == "Relu":
        return np.maximum(z, 0.0)
    if op == "LeakyRelu":
        return np.where(z >= 0, z, attr(node, "alpha", 0.01) * z)
    if op == "Sigmoid":
        return expit(z)
    if op == "Tanh":
        return np.tanh(z)
    if op == "Gelu":
        return 0.5 * z * (1 + erf(z / math.sqrt(2)))
    if op == "gelu_tanh":
        return _gelu_tanh(z)
    return silu(z)


def interval(op, node, lo, hi):
    if op in ("Relu", "LeakyRelu", "Sigmoid", "Tanh"):
        return value(op, node, lo), value(op, node, hi)
    if op in ("Gelu", "gelu_tanh"):
        return gelu_interval((lo, hi), "tanh" if op == "gelu_tanh" else "none")
    _, zmin = critical("silu")
    a, b = silu(lo), silu(hi)
    inside = (lo <= zmin) & (hi >= zmin)
    return np.where(inside, float(silu(np.array(zmin))) - SLACK, np.minimum(a, b)), np.maximum(a, b)


def derivative(op, node, lo, hi):
    """(min σ', max σ') over [lo, hi], elementwise."""
    up = hi > 0  # else the unit is off on the whole box
    on = (lo >= 0) & up
    if op == "Relu":
        return on.astype(np.float64), up.astype(np.float64)
    if op == "LeakyRelu":
        a = attr(node, "alpha", 0.01)
        first, second = np.where(on, 1.0, a), np.where(up, 1.0, a)
        return np.minimum(first, second), np.maximum(first, second)
    if op == "Sigmoid":
        return _even_decreasing(lambda z: expit(z) * (1 - expit(z)), lo, hi)
    if op == "Tanh":
        return _even_decreasing(lambda z: 1 - np.tanh(z) ** 2, lo, hi)
    prime = {"Gelu": gelu_prime, "gelu_tanh": gelu_tanh_prime, "Silu": silu_prime}[op]
    name = {"Gelu": "gelu", "gelu_tanh": "gelu_tanh", "Silu": "silu"}[op]
    return _smooth_derivative(prime, critical(name)[0], lo, hi)
