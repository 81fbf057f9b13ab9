r"""The search of :func:`.api.certified_radius` for one input: the largest ℓ2 radius r such that
the local bounds certify the ball of radius r around x (or a smaller certificate a ball gives).

Start at the linearised radius (z_top − z_2) / (√2 ‖J(x)‖₂); double while balls are certified
and halve while they are not (at most 8 steps), then ``iterations`` log-bisection steps
between the largest certified ball g and the smallest refused one b (mid = √(g b)). The result
is the largest certificate seen, and at least the global margin / (√2 L). Every ball after the
first refused one is smaller than the smallest refused ball so far, so with ``reuse`` it starts
from that ball's intervals (:mod:`.nested`: sound on the subset, never wider at any node);
each ball asks only for its certificate, so a ball whose margins CROWN proves positive skips
the logits' Jacobian rows (:meth:`.api._Setup.one`), which change nothing else there.

References: Weng et al., ICML 2018 (CLEVER: certification from local Lipschitz constants);
Zhang et al., NeurIPS 2018 (CROWN).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import InvalidArgumentError
from . import branch, layout, nested, slopes


def checked(iterations, reuse, alpha, branches):
    """(iterations, reuse, alpha, branches) of :func:`radius` checked: bisection steps an
    integer in [0, 60], ``reuse`` a bool, ``alpha`` slope steps (:func:`.slopes.steps`) and
    ``branches`` subdomains (:func:`.branch.budget`)."""
    if isinstance(iterations, bool) or not (isinstance(iterations, (int, np.integer)) and 0 <= iterations <= 60):
        raise InvalidArgumentError(f"iterations must be an integer in [0, 60], got {iterations!r}")
    if not isinstance(reuse, (bool, np.bool_)):
        raise InvalidArgumentError(f"reuse must be True (reuse a refused ball's intervals) or False, got {reuse!r}")
    return int(iterations), bool(reuse), slopes.steps(alpha), branch.budget(branches)


def radius(s, i, iterations, reuse=True, alpha=0, branches=0):
    """The certified ℓ2 radius of input i of the setup s (an :class:`.api._Setup`), each ball's
    ReLU lower slopes optimised by ``alpha`` ascent steps (:mod:`.slopes`), a refused ball tried
    again by branch and bound on up to ``branches`` subdomains (:mod:`.branch`)."""
    at_x = s.one(i, 0.0)
    z = sorted(at_x["logits"])
    best = 0.0 if s.L is None or len(z) < 2 else (z[-1] - z[-2]) / (math.sqrt(2.0) * s.L)
    lin = (z[-1] - z[-2]) / max(math.sqrt(2.0) * at_x["lipschitz"], 1e-300) if len(z) > 1 else 0.0
    rho = max(float(lin), 1e-12)  # the linearisation's radius: a starting guess
    good, bad, outer = 0.0, None, None
    rows = branch.margin_rows(at_x["logits"], layout.shape(s.g, s.g.output)[1:])
    split = branches > 0 and len(rows) > 0 and not s.net.heavy and branch.splittable(s.net)

    def certify(r):
        nonlocal best, bad, outer
        res = s.one(i, r, outer=outer, certificate_only=True, alpha=alpha)
        c = res["certified"]
        if c < r and split and branch.certify(s, s.last, rows, res["margin_rows_lower"], alpha, branches):
            c = r
        best = max(best, c)
        if c < r:  # refused: every later ball is smaller, and may start from its intervals
            bad, outer = r, nested.intervals(s.last) if reuse else None
        s.last = None
        return c >= r

    for _ in range(8):
        if certify(rho):
            good, rho = rho, 2 * rho
        elif good > 0:
            break
        else:
            rho = rho / 2
    if bad is not None and good > 0:
        for _ in range(iterations):
            mid = math.sqrt(good * bad)
            if certify(mid):
                good = mid
    return best
