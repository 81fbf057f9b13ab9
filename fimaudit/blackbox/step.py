r"""The finite-difference step rule and its check.

Schemes, for a unit direction v̂, step h and model outputs f (σ: the noise of f):

* central:    J v̂ ≈ (f(x + h v̂) − f(x − h v̂)) / 2h,  error ≈ h² |f'''|/6 + σ/h;
* forward:    J v̂ ≈ (f(x + h v̂) − f(x)) / h,         error ≈ h |f''|/2 + 2σ/h;
* richardson: (4 D(h/2) − D(h)) / 3 on central D,     error O(h⁴) + O(σ/h).

Step: ``h = s · r^q`` with s the input's RMS scale and ``r = max(σ, eps) / (‖J‖_F s)`` the
noise relative to the change of f across the input scale, clipped to ``[eps^1.5, 1]``
(eps of the input dtype: the floor still moves the input by many ulps). ``‖J‖_F ≈ |J p| √d``
is read off the slope along the noise probe's direction p, since λ_max aggregates all d
columns and its noise error scales with ‖J‖, not with one column. Balancing noise against
truncation gives q = 1/3 for a smooth f and q = 1/2 when the error is first order in h
(forward differences, and central differences across the kinks of ReLU and max-pool
networks); central differences use q = 0.4, between the two, forward q = 1/2 and
Richardson q = 1/5.

Check: halving the step along p gives the truncation error of one product beyond the
noise, ``τ = max(|D(h) − D(h/2)| / |D(h/2)| − 3·1.6 σ√L/(h |D(h/2)|), 0)`` (L live
outputs; per component D(h) carries σ/(√2 h) and D(h/2) σ√2/h, so their difference about
1.6 σ/h), which widens the brackets (:mod:`fimaudit.blackbox.fd_error`).
Scale: an input is refused before any query when its scale s (the RMS of its entries, computed
without squaring them) is outside ``[√tiny, 1/√tiny]`` of the input dtype (tiny: its smallest
normal number): the step rule squares the entries, the steps reach down to s·eps^0.9 and the
perturbed points up to x ± 2s, and a Fisher information of outputs that change by O(1) across
the input's scale is of order 1/s², so outside that range the steps or the products overflow or
vanish in the dtype. An all-zero input (s = 0) is measured at scale 1.
Reference: Nocedal & Wright, *Numerical Optimization*, 2nd ed., §8.1; Moré & Wild,
"Estimating derivatives of noisy simulations", ACM TOMS 38(3) (2012).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["SCHEMES", "auto_step", "check_scale", "input_scale", "truncation"]

# rows per probe, and the power q of the relative noise r in the step h = s·r^q
SCHEMES = {"central": (2, 0.4), "forward": (1, 1 / 2), "richardson": (4, 1 / 5)}


def auto_step(noise, slope, scale, d, eps, scheme):
    """(n,) steps for unit directions from the noise σ (n,), the slope |J p| (n,) and the
    input scale s (n,) of inputs with d entries."""
    norm_J = slope * np.sqrt(float(d))
    r = np.maximum(noise, eps) / np.maximum(norm_J * scale, np.finfo(np.float64).tiny)
    return scale * np.clip(r, eps**1.5, 1.0) ** SCHEMES[scheme][1]


def truncation(D_h, D_half, noise, live_norm, h):
    """τ (n,) from the quotients (n, C) at steps h and h/2 along one direction."""
    size = np.maximum(np.linalg.norm(D_half, axis=1), np.finfo(np.float64).tiny)
    gap = np.linalg.norm(D_h - D_half, axis=1) / size
    expected = 1.6 * noise * live_norm / (h * size)
    return np.maximum(gap - 3 * expected, 0.0)


def input_scale(flat):
    """(n,) RMS of the rows of ``flat`` (n, d) float64, scaled by each row's largest entry
    first so that no square overflows or underflows."""
    top = np.max(np.abs(flat), axis=1) if flat.size else np.zeros(flat.shape[0])
    unit = flat / np.where(top > 0, top, 1.0)[:, None]
    return top * np.sqrt(np.mean(unit**2, axis=1))


def check_scale(flat, tiny, dtype):
    """Refuse inputs whose scale is outside ``[√tiny, 1/√tiny]`` (see the module docstring).

    >>> import numpy as np
    >>> check_scale(np.array([[3.0, 4.0]]), 2.2e-308, "float64")
    >>> check_scale(np.array([[0.0, 0.0], [1e300, -1e300]]), 2.2e-308, "float64")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fimaudit.errors.InvalidArgumentError: input 1 has scale 1e+300 (the RMS of its entries), outside ...
    """
    s = input_scale(flat)
    low, high = math.sqrt(tiny), 1.0 / math.sqrt(tiny)
    bad = np.flatnonzero((s > 0) & ((s < low) | (s > high)))
    if bad.size:
        i = int(bad[0])
        raise InvalidArgumentError(
            f"input {i} has scale {s[i]:.3g} (the RMS of its entries), outside [{low:.3g}, {high:.3g}], the range "
            f"where finite differences in {dtype} can resolve the model's change (steps and products would "
            f"overflow or vanish); {bad.size} input(s) in all: rescale the inputs (and the model with them) "
            "into that range, or use a wider dtype"
        )
