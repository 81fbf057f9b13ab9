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
Reference: Nocedal & Wright, *Numerical Optimization*, 2nd ed., §8.1; Moré & Wild,
"Estimating derivatives of noisy simulations", ACM TOMS 38(3) (2012).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SCHEMES", "auto_step", "truncation"]

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
