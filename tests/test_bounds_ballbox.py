"""The exact minimum of λ·d over an ℓ2 ball ∩ box against a bisection on the KKT multiplier, random
feasible points, and the box-alone and ball-alone bounds it refines."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fimaudit.bounds.local.ballbox import interval_range, lowest


def bisection(lam, a, b, rho):
    """min λ·d on {‖d‖ ≤ ρ, a ≤ d ≤ b} by bisection on μ in d(μ) = clip(−μλ, a, b)."""
    corner = np.where(lam > 0, a, np.where(lam < 0, b, 0.0))
    if np.linalg.norm(corner) <= rho:
        return float(lam @ corner)
    norm = lambda mu: np.linalg.norm(np.clip(-mu * lam, a, b))  # noqa: E731
    lo, hi = 0.0, 1.0
    while norm(hi) < rho:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if norm(mid) < rho else (lo, mid)
    return float(lam @ np.clip(-hi * lam, a, b))


def feasible(rng, a, b, rho, k):
    """k random points of the ball ∩ box: box points scaled into the ball, plus its corners' directions."""
    lo, hi = np.maximum(a, -rho), np.minimum(b, rho)
    d = lo + rng.random((k, a.size)) * (hi - lo)
    norms = np.linalg.norm(d, axis=1, keepdims=True)
    return d * np.minimum(1.0, rho / np.maximum(norms, 1e-300))


problems = st.tuples(st.integers(0, 10_000), st.integers(1, 9), st.floats(1e-3, 10.0), st.floats(0.0, 0.9))


@settings(max_examples=300, deadline=None)
@given(problems)
def test_lowest_is_the_minimum_over_the_ball_and_box(problem):
    seed, n, rho, open_share = problem
    rng = np.random.default_rng(seed)
    lam = rng.normal(size=(4, n)) * (rng.random((4, n)) < 0.8)  # some zero coefficients
    a = np.where(rng.random(n) < open_share, -np.inf, -rng.exponential(size=n) * (rng.random(n) < 0.8))
    b = np.where(rng.random(n) < open_share, np.inf, rng.exponential(size=n) * (rng.random(n) < 0.8))
    value, d = lowest(lam, a, b, rho)
    pts = feasible(rng, a, b, rho, 200)
    for i in range(4):
        assert np.linalg.norm(d[i]) <= rho * (1 + 1e-9) and np.all(d[i] >= a) and np.all(d[i] <= b)
        ref = bisection(lam[i], a, b, rho)
        assert value[i] <= ref + 1e-12 * (1 + abs(ref))  # a lower bound, and
        assert abs(value[i] - ref) <= 1e-9 * (1 + abs(ref))  # and the minimum
        assert np.all(pts @ lam[i] >= value[i])
        assert value[i] >= -np.linalg.norm(lam[i]) * rho * (1 + 1e-9)  # never below the ball's bound
        with np.errstate(invalid="ignore"):  # 0 · inf where λ_i = 0 is not taken
            box = np.where(lam[i] > 0, lam[i] * a, np.where(lam[i] < 0, lam[i] * b, 0.0)).sum()
        assert value[i] >= box - 1e-9 * (1 + abs(value[i]))  # nor the box's


def test_lowest_on_closed_forms():
    # no box: −‖λ‖ρ at d = −ρλ/‖λ‖; a box inside the ball: its corner; one face active: water filling
    v, d = lowest(np.array([[3.0, 4.0]]), -np.inf, np.inf, 2.0)
    assert abs(v[0] + 10.0) < 1e-10
    assert np.allclose(d, [[-1.2, -1.6]])
    v, d = lowest(np.array([[1.0, -2.0]]), np.array([-0.1, -1.0]), np.array([1.0, 0.2]), 5.0)
    assert np.allclose(d, [[-0.1, 0.2]]) and abs(v[0] + 0.5) < 1e-10
    v, d = lowest(np.array([[1.0, 1.0]]), np.array([0.0, -np.inf]), np.array([1.0, np.inf]), 1.0)
    assert np.allclose(d, [[0.0, -1.0]]) and abs(v[0] + 1.0) < 1e-10  # the first coordinate cannot move down
    v, d = lowest(np.array([[1.0, 1.0]]), -np.inf, np.inf, 0.0)
    assert v[0] == 0.0 and np.all(d == 0)
    v, d = lowest(np.array([[1.0, np.nan]]), -1.0, 1.0, 1.0)
    assert np.isnan(v[0])


@settings(max_examples=150, deadline=None)
@given(problems)
def test_interval_range_holds_every_product(problem):
    seed, n, rho, open_share = problem
    rng = np.random.default_rng(seed)
    jm, jr = rng.normal(size=(3, n)), rng.exponential(size=(3, n)) * (rng.random((3, n)) < 0.6)
    a = np.where(rng.random(n) < open_share, -np.inf, -rng.exponential(size=n))
    b = np.where(rng.random(n) < open_share, np.inf, rng.exponential(size=n))
    low, up = interval_range(jm - jr, jm + jr, a, b, rho)
    pts = feasible(rng, a, b, rho, 100)
    for _ in range(20):
        J = jm + jr * rng.uniform(-1, 1, size=jm.shape)
        J = np.where(rng.random(J.shape) < 0.3, jm + jr * np.sign(rng.normal(size=J.shape)), J)  # interval ends
        v = J @ pts.T
        assert np.all(v >= low[:, None] - 1e-12) and np.all(v <= up[:, None] + 1e-12)
    reach = (np.linalg.norm(jm, axis=1) + np.linalg.norm(jr, axis=1)) * rho  # the Cauchy–Schwarz bound it refines
    assert np.all(up <= reach * (1 + 1e-9)) and np.all(low >= -reach * (1 + 1e-9))
    exact = lowest(jm, a, b, rho)[0]  # a point interval (jr = 0): the split problem is the exact one
    assert np.allclose(interval_range(jm, jm, a, b, rho)[0], exact, rtol=1e-9, atol=1e-12)
