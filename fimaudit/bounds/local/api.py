r"""Local certified bounds around inputs: on B = {x' : ‖x' − x‖_∞ ≤ ρ} ∩ input domain (which
holds the ℓ2 ball of radius ρ), or with ``norm="l2"`` on B = {x' : ‖x' − x‖₂ ≤ ρ} ∩ input domain
(its derivative intervals from pre-activation intervals valid on the ball), per input x:

* ``lipschitz``: L_B ≥ sup_{x' ∈ B} ‖J(x')‖₂ (J the logits' Jacobian), from the Jacobian
  zonotope of :mod:`.engine`: the smaller of ‖J_mid‖₂ + ‖J_rad‖₂ (|J − J_mid| ≤ J_rad
  elementwise) and the bound of :mod:`.zonotope`, which keeps the generators signed; capped
  by the global bound when that is computed. On graphs :mod:`.budget` calls heavy (a row per
  logit costs too much) instead ‖K‖₂ for the magnitude operator K ≥ |J| of :mod:`.magnitude`,
  and the logits' intervals come from interval arithmetic alone;
* ``logits_lower``/``logits_upper``: every logit on B (interval arithmetic ∩ mean-value form ∩
  the CROWN linear bounds of :mod:`.crown`);
* ``fisher_bound``: sup_B λ_max(F) ≤ sup_B λ_max(M) · L_B² (:mod:`.metric`);
* ``certified``: an ℓ2 radius r ≤ ρ around x inside which the top-1 class cannot change
  (inside the domain): r = ρ when the margins' lower bounds on B (mean-value form ∩ CROWN)
  are positive, else min_j m_j(x) / G_j with m_j = z_top − z_j and G_j ≥ sup_B ‖∇m_j‖₂ (each
  margin falls by at most G_j ‖x' − x‖₂ on the convex set B), capped at ρ and at √2 L_B.

:func:`certified_radius` searches ρ over ℓ2 balls (doubling, halving, then log-bisection,
bounded; :mod:`.search`) for the largest such r. References: Weng et al., ICML 2018 (CLEVER:
certification from local Lipschitz constants); Shi et al., NeurIPS 2022; Zhang et al., NeurIPS
2018 (CROWN).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..._array import to_numpy
from ...errors import InputShapeError, InvalidArgumentError
from .. import memory
from ..graph import Graph
from . import branch, layout, magnitude, nested, search, slopes, zonotope
from .engine import Network, Pass
from .metric import sup_metric_norm

GENERATORS = 256  # signed error terms kept through the logits' backward pass (:mod:`.backward`)


@dataclass
class LocalBound:
    """Per-input certified bounds on the box of radius ``radius`` around each input."""

    radius: np.ndarray
    lipschitz: np.ndarray
    fisher_bound: np.ndarray
    logits: np.ndarray
    logits_lower: np.ndarray
    logits_upper: np.ndarray
    margin_lower: np.ndarray
    certified: np.ndarray
    seconds: np.ndarray
    tightened_units: np.ndarray
    global_lipschitz: float | None = None


class _Setup:
    def __init__(self, model, x, input_shape, likelihood, sigma, input_domain, global_cap, memory_limit, tighten, norm):
        from ..lipschitz import _proto, lipschitz_bound

        if norm not in ("linf", "l2"):
            raise InvalidArgumentError(f"norm must be 'linf' (the box) or 'l2' (the ball), got {norm!r}")
        self.norm = norm

        proto = _proto(model, memory_limit)
        X = np.asarray(to_numpy(x), dtype=np.float64)
        if X.ndim < 2 or X.shape[0] == 0:
            raise InputShapeError(f"x must be a batch (n, ...) with n ≥ 1, got shape {X.shape}")
        shape = input_shape or getattr(model, "input_shape", None) or X.shape[1:]
        self.g = Graph(proto, shape, memory_limit)
        full = self.g.shape(self.g.input)
        if X.shape[1:] != tuple(full[1:]):
            raise InputShapeError(f"x has rows of shape {X.shape[1:]}; the model takes {tuple(full[1:])}")
        if not np.all(np.isfinite(X)):
            raise InvalidArgumentError("x holds NaN or inf: local bounds need finite inputs")
        if isinstance(tighten, bool):
            tighten = 4096 if tighten else 0
        if not isinstance(tighten, (int, np.integer)) or tighten < 0:
            raise InvalidArgumentError(f"tighten must be True, False or a unit count ≥ 0, got {tighten!r}")
        self.X, self.likelihood, self.sigma, self.tighten = X, likelihood, sigma, int(tighten)
        self.low, self.high = np.full(X.shape[1:], -np.inf), np.full(X.shape[1:], np.inf)
        if input_domain is not None:
            if not (isinstance(input_domain, (tuple, list)) and len(input_domain) == 2):
                raise InvalidArgumentError("input_domain must be a pair (low, high) of scalars or arrays")
            try:
                self.low, self.high = (np.broadcast_to(np.asarray(v, np.float64), X.shape[1:]) for v in input_domain)
            except ValueError:
                raise InvalidArgumentError(
                    f"input_domain bounds must broadcast to the input shape {X.shape[1:]}"
                ) from None
            if np.any(self.low > self.high):
                raise InvalidArgumentError("input_domain=(low, high) needs low ≤ high everywhere")
            outside = np.flatnonzero(np.any((X < self.low) | (X > self.high), axis=tuple(range(1, X.ndim))))
            if outside.size:
                raise InvalidArgumentError(f"inputs {outside.tolist()} lie outside input_domain: clip them first")
        self.net = Network(self.g)
        domain = None if input_domain is None else (self.low, self.high)  # the cap holds on the domain's boxes
        self.L = lipschitz_bound(proto, tuple(full[1:]), likelihood, sigma, domain).lipschitz if global_cap else None

    def box(self, i, rho):
        x = self.X[i]
        return x[None], np.maximum(x - rho, self.low)[None], np.minimum(x + rho, self.high)[None]

    def one(self, i, rho, outer=None, certificate_only=False, alpha=0):
        """The bounds for input i on its box of radius rho, as a dict of numbers and rows; with
        ``outer``, the :func:`.nested.intervals` of a pass on a set holding this one; with
        ``certificate_only``, a ball whose margins CROWN proves positive returns its certificate
        alone, before the logits' Jacobian rows (then absent) are computed, and a refused one
        also gives ``margin_rows_lower``, those margins' CROWN lower bounds alone (None on a heavy
        graph; :mod:`.branch` starts from them); ``alpha`` slope steps (:mod:`.slopes`). The
        pass: ``last``."""
        t0, self.last = time.perf_counter(), None  # the last pass is freed before the next is built
        x, lo, hi = self.box(i, rho)
        ball, n = (float(rho) if self.norm == "l2" else None), int(self.tighten)
        if outer is None:
            p = Pass(self.net, x, lo, hi, n > 0, n, ball=ball, alpha=alpha)
        else:
            p = nested.NestedPass(self.net, x, lo, hi, outer, tighten=n > 0, limit=n, ball=ball, alpha=alpha)
        self.last, out = p, self.g.output
        z, oshape = p.point[out].reshape(-1), layout.shape(self.g, out)
        C, top = z.size, int(np.argmax(z))
        others = [j for j in range(C) if j != top]
        G = np.concatenate([np.eye(C), branch.margin_rows(z, (C,))])  # the logits, then the margins
        heavy, early = self.net.heavy, None  # heavy: no row per logit, the magnitude bound alone (:mod:`.budget`)
        if certificate_only and rho > 0 and not heavy and C > 1:  # the margins' CROWN lines first
            early = mlo = slopes.bounds(p, out, G[C:].reshape((C - 1, *oshape[1:])), alpha, upper=False)[0]
            if np.all(np.maximum(mlo, p.lo[out].reshape(-1)[top] - p.hi[out].reshape(-1)[others]) > 0):
                return dict(certified=float(rho), seconds=time.perf_counter() - t0, tightened_units=p.tightened)
        parts, Jm, Jr = None, np.full(1, np.inf), np.full(1, np.inf)
        if not heavy:  # the logits' rows, then the margins' (each with its own generators)
            gs = [g.reshape((len(g), *oshape[1:])) for g in (G[:C], G[C:]) if len(g)]
            parts = [p.backward(out, g, GENERATORS, split=True) for g in gs]
            Jm, Jr = (np.concatenate(v) for v in zip(*[(M0, R + np.abs(Mk).sum(0)) for M0, R, Mk in parts]))
        if np.all(np.isfinite(Jm)) and np.all(np.isfinite(Jr)):
            L, low, up = zonotope.norm_bound(*parts[0]), *p.offsets(Jm, Jr)
            slope = zonotope.row_bounds(*parts[1]) if C > 1 else np.zeros(0)
        else:  # intervals too wide to bound anything: no certificate from the Jacobian
            L, low, up, slope = math.inf, np.full(len(G), -np.inf), np.full(len(G), np.inf), np.full(C - 1, np.inf)
        L = min(L, magnitude.norm_bound(p) if heavy else math.inf, math.inf if self.L is None else self.L)
        zlo = np.maximum(p.lo[out].reshape(-1), z + low[:C])
        zhi = np.minimum(p.hi[out].reshape(-1), z + up[:C])
        m = z[top] - z[others]
        mlo = np.maximum(m + low[C:], zlo[top] - zhi[others])
        if rho > 0 and not heavy:  # CROWN: linear bounds of the logits and margins, made concrete over the set
            clo, cup = slopes.bounds(p, out, G.reshape((len(G), *oshape[1:])), alpha)  # α-CROWN slopes
            zlo, zhi, mlo = np.maximum(zlo, clo[:C]), np.minimum(zhi, cup[:C]), np.maximum(mlo, clo[C:])
        slope = np.minimum(slope, math.sqrt(2.0) * L)
        if C < 2:
            cert = 0.0
        elif np.all(mlo > 0):
            cert = float(rho)
        else:
            cert = float(min(rho, np.min(np.where(slope > 0, np.maximum(m, 0) / np.maximum(slope, 1e-300), np.inf))))
        lam = sup_metric_norm(self.likelihood, self.sigma, zlo[None], zhi[None])[0]
        res = dict(
            lipschitz=L,
            fisher_bound=lam * L**2,
            logits=z,
            logits_lower=zlo,
            logits_upper=zhi,
            margin_lower=float(mlo.min()) if C > 1 else 0.0,
            certified=cert,
            seconds=time.perf_counter() - t0,
            tightened_units=p.tightened,
        )
        if certificate_only:
            res["margin_rows_lower"] = early
        return res


def _radii(radius, n):
    r = np.asarray(radius, dtype=np.float64)
    if r.ndim == 0:
        r = np.full(n, float(r))
    if r.shape != (n,) or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise InvalidArgumentError(f"radius must be a finite scalar ≥ 0 or one per input ({n}), got {np.shape(radius)}")
    return r


def local_bound(
    model,
    x,
    radius,
    *,
    input_shape=None,
    likelihood="categorical",
    sigma=1.0,
    input_domain=None,
    global_cap=True,
    tighten=4096,
    norm="linf",
    alpha=0,
    memory_limit=memory.DEFAULT_LIMIT,
) -> LocalBound:
    """Certified bounds around each row of ``x`` on its ℓ∞ box of ``radius`` (a scalar or one
    per input), or with ``norm="l2"`` on its ℓ2 ball of that radius, intersected with
    ``input_domain=(low, high)`` (see the module docstring).

    ``model`` is what :func:`fimaudit.lipschitz_bound` accepts (an ONNX path, bytes,
    ModelProto, or a wrapped model with ``to_onnx()``). ``global_cap`` also computes the
    global bound and caps each local one by it; ``tighten`` is the most pre-activation units
    per tensor whose intervals the mean-value form tightens (each costs one backward pass;
    0 or False: none); ``alpha`` the ascent steps on CROWN's ReLU lower slopes (:mod:`.slopes`).
    """
    s = _Setup(model, x, input_shape, likelihood, sigma, input_domain, global_cap, memory_limit, tighten, norm)
    radii, alpha = _radii(radius, len(s.X)), slopes.steps(alpha)
    rows = [s.one(i, radii[i], alpha=alpha) for i in range(len(s.X))]
    cols = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    return LocalBound(radius=radii, global_lipschitz=s.L, **cols)


def certified_radius(
    model,
    x,
    *,
    iterations=12,
    input_shape=None,
    input_domain=None,
    global_cap=True,
    tighten=4096,
    reuse=True,
    alpha=20,
    branches=0,
    memory_limit=memory.DEFAULT_LIMIT,
):
    """Per row of ``x``, an ℓ2 radius inside which the predicted class provably cannot change
    (for perturbations inside ``input_domain``): the largest certificate of :class:`LocalBound`
    on the ℓ2 balls tried — the linearised radius at x, then up to 8 doublings or halvings,
    then ``iterations`` log-bisection steps — and the global ``margin / (√2 L)``. A ball is
    certified whole when the CROWN lower bounds of every margin z_top − z_j over it are
    positive (their ReLU lower slopes optimised by ``alpha`` ascent steps, 0: CROWN's); else its
    Lipschitz certificate min_j m_j / G_j still counts; with ``branches`` > 0 a refused ball of a
    ReLU network is tried again by branch and bound on up to that many subdomains (:mod:`.branch`).
    With ``reuse`` (the default) a ball smaller than a refused one starts from that one's
    intervals (:mod:`.search`): fewer units to tighten, intervals never wider; ``reuse=False``
    bounds each ball afresh."""
    iterations, reuse, alpha, branches = search.checked(iterations, reuse, alpha, branches)
    s = _Setup(model, x, input_shape, "categorical", 1.0, input_domain, global_cap, memory_limit, tighten, "l2")
    radii = [search.radius(s, i, iterations, reuse, alpha, branches) for i in range(len(s.X))]
    return np.array(radii, dtype=np.float64)
