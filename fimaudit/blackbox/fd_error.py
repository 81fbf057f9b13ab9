r"""The finite-difference error model: how far λ_max may move, and the brackets it widens.

With noise σ (nats) and step h every entry of ``W = R J Qᵀ`` (C × k) carries an error of
about ``ε = √λ_max(M) σ/h``. To first order λ moves by ``2 uᵀ(RE)w`` (one projection of
the error, taken at 3ε) and to second order by at most ``‖RE‖² ≲ (ε(√C + √k))²``, so

    |Δλ| ≲ 6√λ ε + ε²(√C + √k)².

A relative truncation error τ of the products (measured by halving the step along one
direction, :mod:`fimaudit.blackbox.step`, taken three times over) adds ``(2τ + τ²) λ``. m
probes left straddling a kink with errors e_j (the half gaps of their one-sided quotients,
:mod:`fimaudit.blackbox.kinks`: the ones re-measured in vain and the ones never re-measured)
move λ by about ``2√λ ‖R‖ Σ_j |v_j| ‖e_j‖``;
a top direction spread over k probes has ``|v_j| ≈ 1/√k``, hence the term
``2√λ κ + κ²`` with ``κ = (m/k · Σ_j ‖R e_j‖²)^½``: ``‖R e_j‖`` as recorded for the probes
never re-measured, at most ``√λ_max(M) ‖e_j‖`` for those re-measured in vain. At k = d (the
exact method, a sequential sketch's last look) these gaps are the kink error the one
step-halving direction does not see.

With the Gram extrapolated over kinks (``B = 2 B(h) − B(2h)``) the first-order noise term
is taken √(2² + ½²) times and the second-order one 2 − ¼ times (independent errors at
2h, half those at h), and the truncation term is replaced by the randomness of the kinks
that remain: which columns straddle a kink at h and at 2h is a draw, so the extrapolation
is right on average over columns, with a residual estimated as ``3 (Σ_j c_j²)^½``,
``c_j = (uᵀW_j)² − (uᵀW₂_j)²`` the column's share of the correction along the top
eigenvector u. These are estimates, not certificates: kinks the check's direction does not
cross can exceed them. Where the noise table never resolved the outputs (most differences
0 at the widest spacing) the noise is unknown and the error infinite.
Reference: Moré & Wild, "Estimating derivatives of noisy simulations", ACM TOMS 38(3)
(2012); Stewart & Sun, *Matrix Perturbation Theory* (1990), ch. IV (eigenvalue perturbation).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .._array import device, to_numpy
from ..errors import NoiseDominatesWarning
from ..hints import first_input, say

__all__ = ["fd_error", "noisy_inputs", "noise_warning", "warn_noise", "NoiseNote", "NOISE_WARN"]

NOISE_WARN = 0.1  # warn when the estimated error exceeds this fraction of λ_max


def _kink_error(lam, e2, m, k):
    """``2√λ κ + κ²`` with ``κ = (m/k · Σ_j ‖R e_j‖²)^½`` (``e2`` that sum over ``m`` probes)."""
    kappa = np.sqrt(e2 * m / np.maximum(k, 1))
    return 2 * np.sqrt(lam) * kappa + kappa**2


def _noise_error(lam, eps_J, C, k, first=1.0, second=1.0):
    a = eps_J * (math.sqrt(C) + np.sqrt(k))
    return first * 2 * np.sqrt(lam) * 3 * eps_J + second * a * a


def fd_error(xp, diag, metric_norm, C, value, k, top=None, pair=None):
    """Per-input estimate of |Δλ| (in value's library); ``metric_norm`` bounds λ_max(M); ``k``
    the probes (an int, or one per input);
    ``pair`` = (W, W₂), the columns at h and 2h, and ``top`` (n, C) the top eigenvector
    of B when the Gram was extrapolated."""
    eps_J = math.sqrt(metric_norm) * (diag.noise / diag.step)
    lam = np.maximum(to_numpy(value).astype(np.float64), 0)
    if pair is not None:
        err = _noise_error(lam, eps_J, C, k, first=math.sqrt(4 + 1 / 4), second=2 - 1 / 4)
        u, (W, W2) = top[:, None, :], pair
        c = xp.matmul(u, W)[:, 0, :] ** 2 - xp.matmul(u, W2)[:, 0, :] ** 2  # (n, d): each column's correction
        err = err + 3.0 * to_numpy(xp.linalg.vector_norm(c, axis=-1)).astype(np.float64)
    else:
        tau = 3.0 * diag.truncation
        e2, m = metric_norm * diag.kink_error2 + diag.gap_error2, diag.kink_count + diag.gap_count
        err = _noise_error(lam, eps_J, C, k) + (2 * tau + tau**2) * lam + _kink_error(lam, e2, m, k)
    err = np.where(diag.unresolved, np.inf, err)  # noise unknown: no bracket
    return xp.asarray(err, dtype=value.dtype, device=device(value))


@dataclass
class NoiseNote:
    """Inputs of one batch whose finite-difference error may exceed ``NOISE_WARN`` of λ_max,
    with the cause; a call gathers its batches' notes into one warning (:func:`warn_noise`)."""

    inputs: list
    cause: str
    kinky: bool  # the step-halving check points at kinks or curvature
    extrapolated: bool
    ratios: list = None  # each input's estimated error over λ_max (inf: the noise is unknown)


def noisy_inputs(err, value, diag, offset, k=1):
    """The :class:`NoiseNote` of a batch, or None when every input's error is within bounds;
    ``k`` the probes (an int, or one per input), as passed to :func:`fd_error`."""
    scale = np.maximum(value, np.finfo(np.float64).tiny)
    bad = np.flatnonzero(err > NOISE_WARN * scale)
    if not bad.size:
        return None
    tau = float(np.max(diag.truncation[bad]))
    kinky = 6 * tau > NOISE_WARN
    lam = np.maximum(np.asarray(value, np.float64), 0)
    gaps = _kink_error(lam, diag.gap_error2, diag.gap_count, k)[bad]  # the part the one-sided gaps make
    cause = (
        f"the derivative changes by {tau:.1%} when the step is halved (kinks or curvature at step "
        f"{np.min(diag.step[bad]):.2g})"
        if kinky
        else f"measured output noise {np.max(diag.noise[bad]):.2g} nats at step {np.min(diag.step[bad]):.2g}"
    )
    if not kinky and np.any(gaps > 0.5 * np.asarray(err, np.float64)[bad]):  # the gaps' term dominates
        cause = (
            f"the one-sided differences of up to {int(np.max(diag.gap_count[bad]))} probes disagree beyond the "
            f"noise (the step {np.min(diag.step[bad]):.2g} straddles kinks that were not re-measured)"
        )
    if np.any(diag.unresolved[bad]):
        cause = (
            "the answers did not change across the noise table at any spacing tried (outputs quantised more "
            "coarsely than the model's slope moves them), so the noise is unknown and the bracket is [0, inf]"
        )
    ratios = (np.asarray(err, np.float64)[bad] / scale[bad]).tolist()
    return NoiseNote((bad + offset + first_input()).tolist(), cause, kinky, bool(diag.extrapolate), ratios)


def noise_warning(notes):
    """One NoiseDominatesWarning summarising ``notes`` (NoiseNote or None; None when none is
    left): how many inputs, the worst ten by error over λ_max, the causes and what to pass
    (spelled for the reader, :mod:`fimaudit.hints`)."""
    notes = [n for n in notes if n is not None]
    if not notes:
        return None
    pairs = [(i, r) for n in notes for i, r in zip(n.inputs, n.ratios or [math.inf] * len(n.inputs))]
    worst = sorted(pairs, key=lambda p: -p[1])[:10]
    kinky = any(n.kinky and not n.extrapolated for n in notes)
    causes = list(dict.fromkeys(n.cause for n in notes))
    cause = causes[0] + (f" (and {len(causes) - 1} more causes in other batches)" if len(causes) > 1 else "")
    top = f"{worst[0][1]:.0%}" if math.isfinite(worst[0][1]) else "unbounded"
    message = (
        f"finite-difference error may exceed 10% of λ_max for {len(pairs)} inputs (worst first: "
        f"{[i for i, _ in worst]}, error up to {top} of λ_max): {cause} (see .fd_error); the brackets are widened "
        f"accordingly. Rounded or quantised probabilities and TF32/bf16 serving cause noise; pass {say('step')} "
        f"or {say('richardson')} to trade noise against truncation"
        + (
            f"; for a ReLU/max-pool network, {say('kinks_extrapolate')} removes the kinks' bias from the exact method"
            if kinky
            else ""
        )
    )
    return NoiseDominatesWarning(message, notes)


def warn_noise(notes, stacklevel=3):
    """One NoiseDominatesWarning for all the batches of a call (``notes``: NoiseNote or None),
    attributed ``stacklevel`` frames up: 3 is the line that called the function calling this."""
    w = noise_warning(notes)
    if w is not None:
        warnings.warn(w, stacklevel=stacklevel)
