r"""Finite-difference Jacobian–vector products for forward-only models.

For a unit direction v̂ and step h, with f the model's outputs:

* central:    J v̂ ≈ (f(x + h v̂) − f(x − h v̂)) / 2h,  error ≈ h² |f'''|/6 + σ/h;
* forward:    J v̂ ≈ (f(x + h v̂) − f(x)) / h,         error ≈ h |f''|/2 + 2σ/h;
* richardson: (4 D(h/2) − D(h)) / 3 on central D,     error O(h⁴) + O(σ/h).

σ is the noise of f, measured per input with ECnoise (:mod:`fimaudit.blackbox.noise`)
on logits (log p for probability outputs). The step is ``h = s · r^q`` with ``s`` the
input's RMS scale and ``r = max(σ, eps) / (‖J‖_F s)`` the noise relative to the change of
f across the input scale, floored at eps^1.5 (eps of the input dtype: a step of s·eps^0.6,
4e-5·s in float32, still moves the input by hundreds of ulps); ``‖J‖_F ≈ |J p| √d`` is read
off two points at ±40δ along the ECnoise direction p (λ_max aggregates all d columns, so its
noise error scales with ‖J‖, not with one column). The ECnoise table itself is spaced
δ = √eps·s, small so that it seldom straddles a kink (a kink's differences pass for noise).
On the validation study's trained float32 residual CNN (digits, d = 64) the earlier δ of
10√eps·s read 7e-5 nats of "noise" (2e-6 at √eps·s), and with the floor at eps the step
could not go below 1.7e-3·s: its median error was 7.5e-3, with both changes 1.7e-3.
Balancing noise against truncation gives q = 1/3 for a smooth f and q = 1/2
when the error is first order in h (forward differences, and central differences across
the kinks of ReLU and max-pool networks). fimaudit uses q = 0.4 for central differences —
measured on float32 CNNs served as probabilities, relative error of λ_max: 1e-4–1.4e-3 with
GELU, 2e-4–7.5e-3 with ReLU/max-pool, where q = 1/3 gave 1e-4 and up to 1.6e-2 and
q = 1/2 gave 7e-3 and up to 1.3e-1 — q = 1/2 forward and q = 1/5 Richardson. A
step-halving check along p measures the truncation error τ, which widens the brackets. All probes of one
call go to the model as one large batch. A direction v is scaled to unit norm and the
result scaled back.

Kinks (ReLU, max-pool): a central difference whose points straddle a kink of a piecewise-
linear model mixes two slopes. The three points it already has give both one-sided
quotients D₊ and D₋; where they disagree beyond noise, the probe is re-measured at a quarter
step on both sides (2 more calls). On the side without a kink both steps agree (the model
is linear there); on the kinked side they differ; a smooth curvature changes both sides
alike. When one side is clearly steadier (its change under 4× refinement below ¼ of the
other's), its one-sided quotient replaces the central one; otherwise the central one stays
and half the one-sided gap joins the error budget (``kink_error2``): a kink closer to x than
the noise lets a step resolve leaves the derivative at x ambiguous from outside.
``kinks="ignore"`` turns this off; with a query budget it is off so the budget holds.

Kinks everywhere (deep ReLU/max-pool CNNs, where most probes cross some unit's kink within a
step of a few 1e-3): the repair cannot see kinks below the noise, yet they bias λ_max
systematically low — a central quotient across a kink at distance t·h mixes the slopes by
weight (1 − t)/2, and a unit switching off takes its own aligned contribution out of the
column (−2α‖c‖² + α²‖c‖² on ‖D‖², α the mixing weight) while one switching on adds only
α²‖c‖². Each probe straddles a kink with probability ∝ h and the error it then makes does
not depend on h, so the bias of the Gram ``G(h) = Σ_j D_j D_jᵀ`` (and of every quadratic
quantity read from it) is linear in h: ``kinks="extrapolate"`` measures every column of an
``exact`` computation also at 2h and uses ``2 G(h) − G(2h)`` (Richardson extrapolation on
the Gram, not on the quotients: ``(2D(h) − D(2h))`` cancels the linear term of D but leaves
a positive α²-type bias of the same order). 4 calls per column instead of 2; sketches keep
2 calls per probe (their sampling error is far larger than this bias). Measured on a float32
ReLU/max-pool CNN, 3×32×32, 16 inputs (``benchmarks/blackbox.py``): mean signed error of λ_max
−3.7e-3 central, +2.8e-4 extrapolated; median |error| 4.0e-3 → 1.6e-3. On a smooth (GELU) CNN
it only amplifies the noise (6.1e-4 → 1.1e-3), hence an option.
The measured noise also flags a model whose repeated answer to the same query differs.
Reference: Moré & Wild, "Estimating derivatives of noisy simulations", ACM TOMS 38(3)
(2012); Nocedal & Wright, *Numerical Optimization*, 2nd ed., §8.1.
"""

from __future__ import annotations

import numpy as np

from .._array import device, namespace, normal, to_numpy
from ..errors import InvalidArgumentError, NondeterministicModelError
from ..models import Linearization, Model
from .noise import ecnoise

__all__ = ["FiniteDifferenceModel", "FiniteDifferenceLinearization"]

# calls per probe, and the power of the relative noise r in the step h = s·r^power
SCHEMES = {"central": (2, 0.4), "forward": (1, 1 / 2), "richardson": (4, 1 / 5)}
NOISE_POINTS = 8
NOISE_SPACING = 1  # ECnoise's δ in units of √eps × the input's RMS scale
SLOPE_REACH = 40  # the slope |J p| is read off f(x ± SLOPE_REACH·δ p)
KINK_GAP = 0.01  # one-sided quotients further apart than this (relative) are re-measured
FD_OPTIONS = ("scheme", "step", "noise", "on_nondeterminism", "max_rows", "kinks")


class FiniteDifferenceModel(Model):
    """Give a forward-only model a batched jvp by finite differences.

    ``scheme``: "central" (default), "forward" or "richardson". ``step``: "auto" (from
    the measured noise) or an absolute step for unit directions. ``noise``: "auto"
    (ECnoise, ``NOISE_POINTS + 3`` extra calls per input) or a known noise level in
    nats. ``on_nondeterminism``: "widen" (flag it and widen brackets by the measured
    noise) or "raise". ``max_rows``: rows held at once when building probe batches.
    ``kinks``: "repair" (default; central scheme only: re-measure probes whose one-sided
    quotients disagree, 2 calls each, counted in ``queries``), "extrapolate" (central only:
    ``exact`` also measures every column at twice the step and extrapolates the Gram to
    step 0, 4 calls per column; for networks with kinks everywhere) or "ignore".
    """

    has_jvp = True
    has_vjp = False

    def __init__(
        self,
        inner,
        *,
        scheme="central",
        step="auto",
        noise="auto",
        on_nondeterminism="widen",
        max_rows=1 << 16,
        kinks="repair",
    ):
        super().__init__(
            input_shape=inner.input_shape,
            num_outputs=inner.num_outputs,
            output=inner.output,
            likelihood=inner.likelihood,
            sigma=inner.sigma,
        )
        if scheme not in SCHEMES:
            raise InvalidArgumentError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
        if not (step == "auto" or (isinstance(step, (int, float)) and step > 0)):
            raise InvalidArgumentError(f"step must be 'auto' or a positive number, got {step!r}")
        if not (noise == "auto" or (isinstance(noise, (int, float)) and noise >= 0)):
            raise InvalidArgumentError(f"noise must be 'auto' or a number >= 0 (nats), got {noise!r}")
        if on_nondeterminism not in ("widen", "raise"):
            raise InvalidArgumentError(f"on_nondeterminism must be 'widen' or 'raise', got {on_nondeterminism!r}")
        if kinks not in ("repair", "extrapolate", "ignore"):
            raise InvalidArgumentError(f"kinks must be 'repair', 'extrapolate' or 'ignore', got {kinks!r}")
        if kinks == "extrapolate" and scheme != "central":
            raise InvalidArgumentError(
                f"kinks='extrapolate' works on central differences, got scheme={scheme!r}: "
                "use scheme='central' or kinks='ignore'"
            )
        self.inner = inner
        self.kinks = kinks
        self.scheme, self.step, self.noise = scheme, step, noise
        self.on_nondeterminism = on_nondeterminism
        self.max_rows = int(max_rows)

    @property
    def calls(self):
        return getattr(self.inner, "calls", None)

    @property
    def calls_per_probe(self):
        return SCHEMES[self.scheme][0]

    @property
    def extrapolate(self):
        """``exact`` extrapolates the Gram of all columns to step 0 from steps h and 2h."""
        return self.kinks == "extrapolate"

    @property
    def calls_per_column(self):
        """Model calls per column of J for ``exact``."""
        return 2 * self.calls_per_probe if self.extrapolate else self.calls_per_probe

    @property
    def overhead(self):
        """Model calls per input before the first probe: the base point, ECnoise and the
        slope (``NOISE_POINTS + 3``), and the step-halving check (2 central differences)."""
        return 1 + (NOISE_POINTS + 3 + 2 * self.calls_per_probe if self.noise == "auto" else 0)

    def forward(self, x):
        out = self.inner.forward(x)
        self.num_outputs = self.num_outputs or int(out.shape[1])
        return out

    def linearize(self, x):
        return FiniteDifferenceLinearization(self, x)

    def jvp(self, x, v):
        return self.linearize(x).jvp(v)

    def vjp(self, x, u):
        raise NotImplementedError("finite differences give jvps only")


class FiniteDifferenceLinearization(Linearization):
    def __init__(self, model: FiniteDifferenceModel, x, seed=12345):
        self.model, self.x = model, x
        self.xp = xp = namespace(x)
        n = int(x.shape[0])
        self.n = n
        self.logits = model.forward(x)  # raw outputs (probabilities for output="probs")
        self.cost_forward = model.overhead
        self.cost_jvp = model.calls_per_probe
        flat = to_numpy(xp.reshape(x, (n, -1))).astype(np.float64)
        rms = np.sqrt(np.mean(flat**2, axis=1))
        self.scale = np.where(rms > 0, rms, 1.0)
        eps = float(xp.finfo(x.dtype).eps)
        self.nondeterministic = np.zeros(n, bool)
        self.slope = None  # |J p| along the noise probe's direction, from the ECnoise table
        self._probe = None
        # outputs above the floor (log p > log tiny + 1): the others carry no derivative
        self._live = self._log(self.logits) > np.log(np.finfo(np.float64).tiny) + 1.0
        self._live_x = xp.asarray(self._live, device=device(x))  # the same, in the caller's library
        self._live_norm = np.sqrt(np.maximum(np.sum(self._live, axis=1), 1))  # √(live outputs)
        if model.noise == "auto":
            self.noise = self._measure_noise(seed, eps)
        else:
            self.noise = np.full(n, float(model.noise))
        if model.step == "auto":
            # balance noise against truncation relative to the size of the derivative:
            # r = σ / (|J p| s) is the noise relative to the change of f over the input scale
            power = SCHEMES[model.scheme][1]
            slope = self.slope if self.slope is not None else np.ones(n)
            # ‖J‖_F ≈ |J p|·√d: λ's noise error scales with it, not with one column's size
            norm_J = slope * np.sqrt(float(np.prod(x.shape[1:])))
            r = np.maximum(self.noise, eps) / np.maximum(norm_J * self.scale, np.finfo(np.float64).tiny)
            self.h = self.scale * np.clip(r, eps**1.5, 1.0) ** power  # floor: module docstring
        else:
            self.h = np.full(n, float(model.step))
        self.truncation = np.zeros(n)
        if self._probe is not None:
            self.truncation = self._truncation_check()
        self.repair = model.kinks == "repair" and model.scheme == "central"
        self.extra_calls = np.zeros(n, dtype=np.int64)  # kink repairs, per input
        self.kink_error2 = np.zeros(n)  # Σ over unresolved probes of ‖(D₊ − D₋)/2‖² (log scale)
        self.kink_count = np.zeros(n)  # how many probes that sum runs over

    def disable_repair(self):
        """Keep exactly the nominal calls per probe (a query budget is in force)."""
        self.repair = False

    def take_extra_calls(self):
        """Calls spent on kink repairs since the last call, per input (then reset)."""
        out, self.extra_calls = self.extra_calls, np.zeros(self.n, dtype=np.int64)
        return out

    # --- noise ----------------------------------------------------------------------
    def _log(self, out):
        a = to_numpy(out).astype(np.float64)
        if self.model.output != "probs":
            return a
        return np.log(np.maximum(a, np.finfo(np.float64).tiny))

    def _measure_noise(self, seed, eps):
        xp, x, n = self.xp, self.x, self.n
        m = NOISE_POINTS
        p = normal(xp, x, x.shape, seed)
        p = p / xp.reshape(xp.linalg.vector_norm(xp.reshape(p, (n, -1)), axis=1), (n,) + (1,) * (x.ndim - 1))
        # the table's m + 1 points, then two further out for the slope; δ small, so that the
        # table seldom straddles a kink (whose differences pass for noise)
        offsets = [i - m // 2 for i in range(m + 1)] + [SLOPE_REACH, -SLOPE_REACH]
        delta = self.scale * max(eps**0.5, 1e-7) * NOISE_SPACING
        base = self._log(self.logits)
        for attempt in range(4):  # δ up to 10⁵ times √eps·scale for coarsely rounded outputs
            d = xp.asarray(delta, dtype=x.dtype, device=device(x))
            pts = xp.concat([x + (float(o) * xp.reshape(d, (n,) + (1,) * (x.ndim - 1))) * p for o in offsets], axis=0)
            out = self._log(self.model.inner.forward(pts)).reshape(m + 3, n, -1).transpose(1, 0, 2)
            table, ends = out[:, : m + 1, :], out[:, m + 1 :, :]
            if attempt:
                self.cost_forward += m + 3
            sigma, zeros = ecnoise(table)
            # the repeated centre point is a second answer to the base query
            repeat = np.max(np.abs(table[:, m // 2, :] - base), axis=1)
            self.nondeterministic |= repeat > 0
            if np.all(zeros <= 0.5):
                break
            # quantised outputs (or float32 probabilities that barely move over δ): widen δ,
            # 10× first, then 100×
            delta = np.where(zeros > 0.5, delta * (10.0 if attempt == 0 else 100.0), delta)
        live = self._live
        self._probe = p
        ends = np.where(live, ends[:, 0, :] - ends[:, 1, :], 0.0)
        self.slope = np.sqrt(np.sum(ends**2, axis=1)) / (2 * SLOPE_REACH * delta)
        sigma = np.where(live, sigma, np.nan)
        noise = np.nanmedian(np.where(np.isfinite(sigma), sigma, np.nan), axis=1)
        noise = np.where(np.isfinite(noise), noise, 0.0)
        if np.any(self.nondeterministic):
            rows = np.flatnonzero(self.nondeterministic)
            if self.model.on_nondeterminism == "raise":
                raise NondeterministicModelError(
                    f"the model answered the same query differently for inputs {rows[:10].tolist()} "
                    f"(difference up to {repeat.max():.3g} nats): pass on_nondeterminism='widen' to audit it with "
                    "widened brackets, or make the service deterministic"
                )
            noise = np.maximum(noise, repeat / np.sqrt(2.0))
        return noise

    def _truncation_check(self):
        """Relative change of the directional derivative along the noise probe when the
        step is halved, |D(h) − D(h/2)| / |D(h/2)|: an estimate of the truncation (and kink)
        error of one product, beyond the noise. 4 calls per input (2 for forward)."""
        P = self._probe[:, None, ...]
        D = [self._log_differences(P, self.h * f) for f in (1.0, 0.5)]  # counted in overhead
        size = np.maximum(np.linalg.norm(D[1], axis=1), np.finfo(np.float64).tiny)
        gap = np.linalg.norm(D[0] - D[1], axis=1) / size
        # minus what the noise alone makes of it: per component, D(h) carries σ/(√2 h) and
        # D(h/2) σ√2/h (central), so their difference about 1.6 σ/h
        expected = 1.6 * self.noise * self._live_norm / (self.h * size)
        return np.maximum(gap - 3 * expected, 0.0)

    def _log_differences(self, P, h):
        """(n, C) difference quotient of log-outputs along P (n, 1, *shape), host float64."""
        xp, x, n = self.xp, self.x, self.n
        hb = xp.reshape(xp.asarray(h, dtype=x.dtype, device=device(x)), (n, 1) + (1,) * (x.ndim - 1))
        X = x[:, None, ...]
        if self.model.scheme == "forward":
            f = self._log(self._eval(X + hb * P)[:, 0, :])
            D = (f - self._log(self.logits)) / h[:, None]
        else:
            both = self._log(self._eval(xp.concat([X + hb * P, X - hb * P], axis=1)))
            D = (both[:, 0, :] - both[:, 1, :]) / (2 * h[:, None])
        return np.where(self._live, D, 0.0)

    # --- products -------------------------------------------------------------------
    def _eval(self, X):
        """forward on (n, j, *shape) points as one batch → (n, j, C)."""
        xp = self.xp
        n, j = X.shape[0], X.shape[1]
        out = self.model.inner.forward(xp.reshape(X, (n * j, *X.shape[2:])))
        return xp.reshape(out, (n, j, out.shape[-1]))

    def _differences(self, Vhat, h, scheme, repair=True):
        """(n, k, C) difference quotients along unit directions Vhat (n, k, *shape)."""
        xp, x, n = self.xp, self.x, self.n
        hb = xp.reshape(xp.asarray(h, dtype=x.dtype, device=device(x)), (n, 1) + (1,) * (x.ndim - 1))
        h3 = xp.reshape(hb, (n, 1, 1))
        X = x[:, None, ...]
        if scheme == "forward":
            return (self._eval(X + hb * Vhat) - self.logits[:, None, :]) / h3
        k = Vhat.shape[1]
        both = self._eval(xp.concat([X + hb * Vhat, X - hb * Vhat], axis=1))
        D = (both[:, :k, :] - both[:, k:, :]) / (2.0 * h3)
        if repair and self.repair and scheme == "central":
            D = self._repair_kinks(D, both[:, :k, :], both[:, k:, :], Vhat, h)
        return D

    def _logscale(self, D, rows=None):
        """Quotients of raw outputs (n or len(rows), k, C) on the log scale the noise is
        measured on, in the caller's array library."""
        xp = self.xp
        live, base = self._live_x, self.logits
        if rows is not None:
            idx = xp.asarray(rows, device=device(D))
            live, base = live[idx, ...], base[idx, ...]
        if self.model.output == "probs":
            D = (
                D
                / xp.maximum(
                    base, xp.asarray(xp.finfo(base.dtype).smallest_normal, dtype=base.dtype, device=device(base))
                )[:, None, :]
            )
        return xp.where(live[:, None, :], D, xp.zeros_like(D))

    def _repair_kinks(self, D, fp, fm, Vhat, h):
        """Replace central quotients that straddle a kink by the steadier one-sided one. The
        quotients stay in the caller's array library (CuPy stays on the GPU); only the
        indices of flagged probes and the decisions cross to the host."""
        xp, x, n = self.xp, self.x, self.n
        dev = device(D)
        hd = xp.reshape(xp.asarray(h, dtype=D.dtype, device=dev), (n, 1, 1))
        f0 = self.logits[:, None, :]
        Dp, Dm = (fp - f0) / hd, (f0 - fm) / hd
        lp, lm = self._logscale(Dp), self._logscale(Dm)
        noise = xp.asarray((2.0 * self.noise * self._live_norm / h)[:, None], dtype=D.dtype, device=dev)
        gap = xp.linalg.vector_norm(lp - lm, axis=2)  # (n, k); noise alone makes about `noise`
        # a smooth curvature opens a gap of about h|f''|, small beside the quotient; a kink's
        # gap is a fraction of a slope change, so only gaps above 1% of the quotient (and
        # well above the noise) are re-measured
        size = xp.linalg.vector_norm(lp + lm, axis=2) / 2
        flagged = to_numpy((gap > 4.0 * noise) & (gap > KINK_GAP * size))
        rows, cols = np.nonzero(flagged)
        if rows.size == 0:
            return D
        m = rows.size
        np.add.at(self.extra_calls, rows, 2)
        ir, ic = xp.asarray(rows, device=device(x)), xp.asarray(cols, device=device(x))
        q = h[rows] / 4
        hq = xp.reshape(xp.asarray(q, dtype=x.dtype, device=device(x)), (m,) + (1,) * (x.ndim - 1))
        V, xr = Vhat[ir, ic, ...], x[ir, ...]
        out = self.model.inner.forward(xp.concat([xr + hq * V, xr - hq * V], axis=0))
        base = self.logits[ir, :]
        qd = xp.reshape(xp.asarray(q, dtype=D.dtype, device=dev), (m, 1))
        lpq = self._logscale(((out[:m, ...] - base) / qd)[:, None, :], rows)[:, 0, :]
        lmq = self._logscale(((base - out[m:, ...]) / qd)[:, None, :], rows)[:, 0, :]
        ep = to_numpy(xp.linalg.vector_norm(lp[ir, ic, :] - lpq, axis=1))  # each side's change under 4× refinement
        em = to_numpy(xp.linalg.vector_norm(lm[ir, ic, :] - lmq, axis=1))
        g = to_numpy(gap[ir, ic]).astype(np.float64)
        plus, minus = ep < 0.25 * em, em < 0.25 * ep
        # unresolved — both sides steady yet apart (a kink within a quarter step of x, too
        # close to resolve), kinks on both sides, or a strong curvature: the central quotient
        # stays and half the gap enters the error budget
        rest = ~(plus | minus)
        np.add.at(self.kink_error2, rows[rest], g[rest] ** 2 / 4)
        np.add.at(self.kink_count, rows[rest], 1)
        if not np.any(plus | minus):
            return D
        mask = np.zeros(flagged.shape + (1,), dtype=np.int8)
        mask[rows[plus], cols[plus]] = 1
        mask[rows[minus], cols[minus]] = -1
        mask = xp.asarray(mask, device=dev)
        return xp.where(mask == 1, Dp, xp.where(mask == -1, Dm, D))

    def jvp_many(self, V, step_factor=1.0):
        """Quotients along V (n, k, *shape) at step ``step_factor · h`` (the kink repair runs
        at the nominal step only)."""
        xp, n = self.xp, self.n
        h = self.h * step_factor
        k = int(V.shape[1])
        d = int(np.prod(V.shape[2:]))
        rows = max(1, self.model.max_rows // max(1, n * self.cost_jvp))
        parts = []
        for lo in range(0, k, rows):
            Vc = V[:, lo : lo + rows, ...]
            kc = int(Vc.shape[1])
            nu = xp.linalg.vector_norm(xp.reshape(Vc, (n, kc, d)), axis=-1)  # (n, kc)
            safe = xp.where(nu > 0, nu, xp.ones_like(nu))
            Vhat = Vc / xp.reshape(safe, (n, kc) + (1,) * (Vc.ndim - 2))
            if self.model.scheme == "richardson":
                D = (4.0 * self._differences(Vhat, h / 2, "central") - self._differences(Vhat, h, "central")) / 3.0
            else:
                D = self._differences(Vhat, h, self.model.scheme, repair=step_factor == 1.0)
            parts.append(D * nu[:, :, None])
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)

    def jvp(self, v):
        return self.jvp_many(v[:, None, ...])[:, 0, :]

    def vjp(self, u):
        raise NotImplementedError("finite differences give jvps only")

    def vjp_many(self, U):
        raise NotImplementedError("finite differences give jvps only")
