r"""Finite-difference Jacobian–vector products: the linearization at a batch.

A product along v is the difference quotient along the unit v̂ = v/‖v‖ at the input's step
h (:mod:`fimaudit.blackbox.step`), scaled back by ‖v‖; all probes of one call go to the
model as one large batch (at most ``max_rows`` rows). Set-up, in order: the base point,
the noise table (:mod:`fimaudit.blackbox.noise`), the step and its step-halving check.
Every row is charged to the :class:`~fimaudit.ledger.QueryLedger` before it is sent; a
data-dependent set-up row (a widened noise table) is refused when it would leave the
estimator less than its minimum, and kinks are re-measured only without a budget. How the
products were made is one :class:`~fimaudit.blackbox.diagnostics.FDDiagnostics`.
Reference: Nocedal & Wright, *Numerical Optimization*, 2nd ed., §8.1.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from .._array import device, namespace, to_numpy
from ..errors import NondeterministicModelError
from ..ledger import QueryLedger
from ..likelihoods import get_likelihood
from ..models import Linearization
from . import kinks as _kinks
from . import noise as _noise
from .diagnostics import FDDiagnostics
from .step import SCHEMES, auto_step, check_scale, input_scale, truncation

__all__ = ["FiniteDifferenceLinearization", "check_rows"]

NOISE_FIX = "pass noise= (the model's known output noise, in nats) to skip measuring it"


def check_rows(scheme):
    """Rows per input of the step-halving check: two quotients, central ones for Richardson."""
    return 2 if scheme == "forward" else 4


class FiniteDifferenceLinearization(Linearization):
    def __init__(self, model, x, ledger=None, seed=12345):
        self.model, self.x = model, x
        self.xp = xp = namespace(x)
        self.n = n = int(x.shape[0])
        self.ledger = QueryLedger(None, n) if ledger is None else ledger
        self.probs = model.output == "probs"
        flat = to_numpy(xp.reshape(x, (n, -1))).astype(np.float64)
        check_scale(flat, float(xp.finfo(x.dtype).smallest_normal), str(x.dtype))  # before any query
        self.logits = self._send(x, 1, "the base point")  # raw outputs (probabilities for output="probs")
        model.num_outputs = model.num_outputs or int(self.logits.shape[1])
        rms = input_scale(flat)
        scale = np.where(rms > 0, rms, 1.0)
        eps = float(xp.finfo(x.dtype).eps)
        base = self._log(self.logits)
        raw = to_numpy(self.logits).astype(np.float64)
        lik = get_likelihood(model.likelihood, model.sigma)
        self._base, self._dz = base, lik.natural_from_probs(np, raw)[1] if self.probs else np.ones_like(raw)
        # outputs above the floor (log p > log tiny + 1): the others carry no derivative
        self._live = base > np.log(np.finfo(np.float64).tiny) + 1.0
        self._live_x = xp.asarray(self._live, device=device(x))
        self._live_norm = np.sqrt(np.maximum(np.sum(self._live, axis=1), 1))  # √(live outputs)
        probe = None
        if model.noise == "auto":
            probe = _noise.measure(
                self._table_sender(check_rows(model.scheme)), x, base, scale, self._live, eps, seed, self._log
            )
            noise, slope, nondet = probe.noise, probe.slope, probe.nondeterministic
            if np.any(nondet) and model.on_nondeterminism == "raise":
                rows = np.flatnonzero(nondet)
                raise NondeterministicModelError(
                    f"the model answered the same query differently for inputs {rows[:10].tolist()} "
                    f"(difference up to {probe.repeat.max():.3g} nats): pass on_nondeterminism='widen' to audit "
                    "it with widened brackets, or make the service deterministic"
                )
        else:
            noise, slope, nondet = np.full(n, float(model.noise)), np.ones(n), np.zeros(n, bool)
        d = int(np.prod(x.shape[1:]))
        h = auto_step(noise, slope, scale, d, eps, model.scheme) if model.step == "auto" else np.full(n, model.step)
        unresolved = probe.unresolved if probe is not None else np.zeros(n, bool)
        self.diagnostics = FDDiagnostics(
            model.scheme, h, noise, np.zeros(n), nondet, extrapolate=model.kinks == "extrapolate", unresolved=unresolved
        )
        if probe is not None:
            P = probe.direction[:, None, ...]
            D = [self._log_differences(P, h * f) for f in (1.0, 0.5)]
            self.diagnostics.truncation = truncation(D[0], D[1], noise, self._live_norm, h)
        # re-measures are data-dependent: made only where no budget must hold
        self.repair = model.kinks == "repair" and model.scheme == "central" and not self.ledger.bounded

    # --- model calls, each charged first ----------------------------------------------
    def _send(self, X, rows, what):
        self.ledger.charge(rows, what)
        return self.model.forward(X)

    def _table_sender(self, check_rows):
        def send(points, attempt):
            what = "the noise table" if attempt == 0 else "widening the noise table (outputs look quantised)"
            # the step check and the estimator's minimum must still fit after the table
            self.ledger.charge_setup(_noise.TABLE_ROWS, what, then=check_rows, fix=NOISE_FIX)
            return self.model.forward(points)

        return send

    def _eval(self, X, what):
        """forward on (n, j, *shape) points as one batch → (n, j, C)."""
        xp = self.xp
        n, j = X.shape[0], X.shape[1]
        out = self._send(xp.reshape(X, (n * j, *X.shape[2:])), j, what)
        return xp.reshape(out, (n, j, out.shape[-1]))

    def _log(self, out):
        """Outputs on the scale of the likelihood's natural parameters (log p, the log-odds),
        the scale the Fisher reads them on and so the one their noise is measured on."""
        a = to_numpy(out).astype(np.float64)
        return get_likelihood(self.model.likelihood, self.model.sigma).natural_from_probs(np, a)[0] if self.probs else a

    # --- quotients --------------------------------------------------------------------
    def _step(self, h):
        xp, x = self.xp, self.x
        return xp.reshape(xp.asarray(h, dtype=x.dtype, device=device(x)), (self.n, 1) + (1,) * (x.ndim - 1))

    def _log_differences(self, P, h):
        """(n, C) quotient of log-outputs along P (n, 1, *shape), host float64 (the step check)."""
        xp, X, hb = self.xp, self.x[:, None, ...], self._step(h)
        if self.model.scheme == "forward":
            f = self._log(self._eval(X + hb * P, "the step check")[:, 0, :])
            D = (f - self._log(self.logits)) / h[:, None]
        else:
            both = self._log(self._eval(xp.concat([X + hb * P, X - hb * P], axis=1), "the step check"))
            D = (both[:, 0, :] - both[:, 1, :]) / (2 * h[:, None])
        return np.where(self._live, D, 0.0)

    def _differences(self, Vhat, h, scheme, repair):
        """(n, k, C) quotients along unit directions Vhat (n, k, *shape)."""
        xp, X, hb = self.xp, self.x[:, None, ...], self._step(h)
        h3 = xp.reshape(hb, (self.n, 1, 1))
        k = int(Vhat.shape[1])
        if scheme == "forward":
            return (self._eval(X + hb * Vhat, f"{k} probes") - self.logits[:, None, :]) / h3
        both = self._eval(xp.concat([X + hb * Vhat, X - hb * Vhat], axis=1), f"{k} probes")
        D = (both[:, :k, :] - both[:, k:, :]) / (2.0 * h3)
        if repair and not self.repair and self.model.kinks != "ignore":  # no re-measure: the gaps are the error
            args = (self.logits, self._live_x, self.probs, both[:, :k, :], both[:, k:, :], h)
            _kinks.record_gaps(xp, *args, self.diagnostics.noise, self._live_norm, self._to_factor, self.diagnostics)
        if repair and self.repair:
            D = _kinks.repair(
                xp,
                self.x,
                self.logits,
                self._live_x,
                self.probs,
                D,
                both[:, :k, :],
                both[:, k:, :],
                Vhat,
                h,
                self.diagnostics.noise,
                self._live_norm,
                lambda pts, rows: self._send(pts, rows, "re-measuring probes across a kink"),
                self.diagnostics,
                self._to_factor,
            )
        return D

    def _to_factor(self, E):
        """Raw-output differences (n, k, C) → the same in rows of W = R J (host float64)."""
        R = get_likelihood(self.model.likelihood, self.model.sigma).factor(np, self._base)  # R at x
        return R.apply(E * self._dz[:, None, :])

    def _only(self, idx):
        """This linearization at the inputs ``idx`` alone: rows are sent and charged for those
        inputs only, and kinks are not re-measured (a sequential sketch's running inputs)."""
        sub = copy.copy(self)
        ii = self.xp.asarray(idx, device=device(self.x))
        sub.n, sub.ledger, sub.repair = int(idx.size), self.ledger.only(idx), False
        sub.x, sub.logits, sub._live_x = (self.xp.take(a, ii, axis=0) for a in (self.x, self.logits, self._live_x))
        sub._live, sub._live_norm, sub._dz, sub._base = (
            a[idx] for a in (self._live, self._live_norm, self._dz, self._base)
        )
        per_input = {
            f.name: getattr(self.diagnostics, f.name)[idx]
            for f in dataclasses.fields(self.diagnostics)
            if isinstance(getattr(self.diagnostics, f.name), np.ndarray)
        }
        sub.diagnostics = dataclasses.replace(self.diagnostics, **per_input)
        return sub

    def jvp_many(self, V, step_factor=1.0, inputs=None):
        """Quotients along V (n, k, *shape) at step ``step_factor · h`` (kinks are repaired at
        the nominal step only); ``inputs`` (numpy ints): V's rows belong to those inputs only."""
        if inputs is not None:
            idx = np.asarray(inputs, dtype=np.int64)
            sub = self._only(idx)
            out = sub.jvp_many(V, step_factor)
            self.diagnostics.gap_error2[idx] = sub.diagnostics.gap_error2  # the rounds' gaps stay on record
            self.diagnostics.gap_count[idx] = sub.diagnostics.gap_count
            return out
        xp, n = self.xp, self.n
        h = self.diagnostics.step * step_factor
        k, d = int(V.shape[1]), int(np.prod(V.shape[2:]))
        rows = max(1, self.model.max_rows // max(1, n * SCHEMES[self.model.scheme][0]))
        parts = []
        for lo in range(0, k, rows):
            Vc = V[:, lo : lo + rows, ...]
            kc = int(Vc.shape[1])
            nu = xp.linalg.vector_norm(xp.reshape(Vc, (n, kc, d)), axis=-1)  # (n, kc)
            safe = xp.where(nu > 0, nu, xp.ones_like(nu))
            Vhat = Vc / xp.reshape(safe, (n, kc) + (1,) * (Vc.ndim - 2))
            if self.model.scheme == "richardson":
                D = (
                    4.0 * self._differences(Vhat, h / 2, "central", False)
                    - self._differences(Vhat, h, "central", False)
                ) / 3.0
            else:
                D = self._differences(Vhat, h, self.model.scheme, step_factor == 1.0)
            parts.append(D * nu[:, :, None])
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)

    def jvp(self, v):
        return self.jvp_many(v[:, None, ...])[:, 0, :]

    def vjp(self, u):
        raise NotImplementedError("finite differences give jvps only")

    def vjp_many(self, U):
        raise NotImplementedError("finite differences give jvps only")
