"""Sketch intervals and the sequential sketch (``tol=``) against dense float64 truth.

The models are linear, z = J x with a Gaussian likelihood (σ = 1), so F = JᵀJ and
B = J Jᵀ is known exactly; J = U diag(√μ) Vᵀ is built with a chosen spectrum μ: flat (9
equal eigenvalues), two equal at the top, rank 1, and geometric. Products are exact (the
model's own jvp), so the Ritz value must never exceed the truth. The inputs of one batch
draw independent probes, so a batch of n inputs is n independent runs.

Coverage is asserted at ≥ 0.93 where the construction promises ≥ 0.95: with N independent
runs the observed coverage of a 0.95 interval falls under 0.93 with probability
P(Bin(N, 0.05) > 0.07 N), about 0.5% for N = 800 and 4% for N = 240 (the sequential runs,
whose error spending makes the true coverage higher still).
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.errors import InvalidArgumentError, PrecisionNotReachedWarning
from fimaudit.linalg.sketch_bounds import interval, spend
from fimaudit.testing import SPECTRA, ForwardLinearModel, spectral_jacobian

C = len(SPECTRA["flat"])


def jacobian(mu, d, seed=0):
    return spectral_jacobian(mu, d, np.random.default_rng(seed))


def Linear(J, input_shape=None):
    """z = J x with forward and jvp only (forward-mode AD), Gaussian likelihood: B = J Jᵀ."""
    return ForwardLinearModel(J, input_shape=input_shape, likelihood="gaussian")


def truth(J):
    return np.linalg.eigvalsh(J @ J.T)[-1]


def covers(low, high, lam):
    """low ≤ λ ≤ high up to round-off (the Ritz value equals λ once span Q meets the top eigenspace)."""
    return (low <= lam * (1 + 1e-9)) & (lam * (1 - 1e-9) <= high)


@pytest.mark.parametrize("shape", SPECTRA)
@pytest.mark.parametrize("k", [12, 64])
def test_one_look_interval_covers_every_spectrum_shape(shape, k):
    d, N = 128, 800
    rng = np.random.default_rng(k)
    J = jacobian(SPECTRA[shape], d)
    S = np.stack([J @ np.linalg.qr(rng.standard_normal((d, k)))[0] for _ in range(N)])
    iv = interval(S, d, 0.025, 0.025)
    lam = truth(J)
    assert np.all(iv.ritz <= lam * (1 + 1e-12)) and np.all(iv.ritz <= iv.low)
    cover = np.mean(covers(iv.low, iv.high, lam))
    assert cover >= 0.93, (shape, k, cover)


def test_error_spending_sums_to_alpha():
    assert np.isclose(sum(spend(0.05, j) for j in range(1, 200_000)), 0.05, rtol=1e-4)


@pytest.mark.parametrize("shape", SPECTRA)
def test_stopped_and_fixed_budget_intervals_cover(shape):
    d, n = 96, 120
    J = jacobian(SPECTRA[shape], d, seed=1)
    lam, x = truth(J), np.zeros((n, d))
    cover = []
    for seed in (0, 1):
        r = fa.fisher_norm(Linear(J), x, method="sketch", tol=0.25, seed=seed)
        assert np.all(r.tol_met) and np.all(r.halfwidth <= 0.25)  # no budget: each stops at its tol
        assert np.all(r.ritz <= lam * (1 + 1e-12)) and np.all(r.ritz <= r.lower)
        assert np.all(r.queries == 1 + r.probes)  # one forward, one jvp per probe
        cover.append(covers(r.lower, r.upper, lam))
        f = fa.fisher_norm(Linear(J), x, method="sketch", budget=1 + 30, seed=seed)
        assert np.all(f.ritz <= lam * (1 + 1e-12))
        cover.append(covers(f.lower, f.upper, lam))
    assert np.mean(cover[0::2]) >= 0.93 and np.mean(cover[1::2]) >= 0.93, [np.mean(c) for c in cover]


def test_inputs_that_stop_send_no_more_rows():
    """Inputs stop at different looks; each is charged exactly its own probes, and the black
    box's rows add up to what the ledger charged."""
    d = 128
    W = jacobian(SPECTRA["rank-1"], d, seed=2)
    sent = []

    def fn(x):
        sent.append(len(x))
        return x @ W.T

    bb = fa.wrap(fn, input_shape=(d,), output="logits", noise=0.0, step=1e-5)
    r = fa.fisher_norm(bb, np.zeros((12, d)), method="sketch", tol=0.3)
    setup = bb.costs().setup
    assert len(set(r.probes.tolist())) > 1  # the inputs stopped at different looks
    assert np.all(r.queries == setup + 2 * r.probes) and sum(sent) == r.queries.sum()


@settings(max_examples=12, deadline=None)
@given(
    budget=st.integers(20, 160),
    tol=st.floats(0.02, 0.6),
    shape=st.sampled_from(sorted(SPECTRA)),
    seed=st.integers(0, 10**6),
)
def test_budget_is_never_exceeded(budget, tol, shape, seed):
    d = 48
    W = jacobian(SPECTRA[shape], d, seed=seed % 7)
    rows = []

    def fn(x):
        rows.append(len(x))
        return x @ W.T

    bb = fa.wrap(fn, input_shape=(d,), output="logits", noise=0.0, step=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionNotReachedWarning)
        r = fa.fisher_norm(bb, np.zeros((3, d)), method="sketch", tol=tol, budget=budget, seed=seed)
    assert np.all(r.queries <= budget) and sum(rows) == r.queries.sum()
    assert np.array_equal(r.tol_met, r.halfwidth <= tol)
    # an input that did not reach tol used every probe its budget allowed
    spare = budget - r.queries[~r.tol_met]
    assert np.all(spare < 2), spare


def test_rows_are_flagged_and_warned_once_when_the_budget_binds():
    d = 80
    J = jacobian(SPECTRA["flat"], d, seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = fa.fisher_norm(Linear(J), np.zeros((4, d)), method="sketch", tol=0.02, budget=30)
    ours = [w for w in caught if issubclass(w.category, PrecisionNotReachedWarning)]
    assert len(ours) == 1 and "halfwidth" in str(ours[0].message)
    assert not np.any(r.tol_met) and np.all(r.halfwidth > 0.02) and np.all(r.queries <= 30)


def test_error_shrinks_as_tol_shrinks_and_small_tol_is_exact():
    d, n = 96, 60
    J = jacobian(SPECTRA["geometric"], d, seed=4)
    lam, x = truth(J), np.zeros((n, d))
    err = {}
    for tol in (0.4, 0.2, 0.1):
        r = fa.fisher_norm(Linear(J), x, method="sketch", tol=tol)
        err[tol] = np.mean(np.abs(r.value / lam - 1))
        assert np.all(np.abs(r.value / lam - 1) <= 2 * tol / (1 - tol))  # value inside a covering interval
    assert err[0.4] > err[0.2] > err[0.1], err
    r = fa.fisher_norm(Linear(J), x[:2], method="sketch", tol=1e-6)
    assert np.all(r.probes == d) and np.allclose(r.value, lam, rtol=1e-10)  # without replacement: exact at k = d


def test_dct_probes_and_bad_tol():
    d = (1, 8, 8)
    J = jacobian(SPECTRA["geometric"], 64, seed=5)

    r = fa.fisher_norm(Linear(J, d), np.zeros((40, *d)), method="sketch", tol=0.3, probes="dct")
    lam = truth(J)
    assert r.method == "sketch-dct" and np.all(r.ritz <= lam * (1 + 1e-12))
    assert np.mean(covers(r.lower, r.upper, lam)) >= 0.9
    with pytest.raises(InvalidArgumentError, match="0 < tol < 1"):
        fa.fisher_norm(Linear(J), np.zeros((1, 64)), method="sketch", tol=1.5)
    with pytest.raises(InvalidArgumentError, match="'random' or 'dct'"):
        fa.fisher_norm(Linear(J), np.zeros((1, 64)), method="sketch", tol=0.1, probes=np.eye(64)[:4])


def test_plan_estimates_the_calls_from_a_pilot():
    d = 128
    J = jacobian(SPECTRA["geometric"], d, seed=2)
    x = np.zeros((6, d))
    p = fa.plan(Linear(J), x, method="sketch", tol=0.2)
    r = fa.fisher_norm(Linear(J), x, method="sketch", tol=0.2)
    assert p.method == "sketch" and p.pilot_calls == 1 + 32 and "pilot" in p.note
    assert 0.5 <= p.calls_per_input / r.queries.max() <= 2.0, (p.calls_per_input, r.queries)
    assert fa.plan(Linear(J), x, method="sketch", tol=0.2, budget=60).calls_per_input <= 60


@pytest.mark.parametrize("probes", ["random", "dct"])
def test_sequential_direction_is_the_ritz_vector(probes):
    """return_direction with tol: a unit vector v whose Rayleigh quotient vᵀFv (F = JᵀJ, dense)
    is the Ritz value, so it lies below λ_max on every draw."""
    d = 64
    J = jacobian(SPECTRA["geometric"], d)
    m = Linear(J, input_shape=(8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionNotReachedWarning)
        r = fa.fisher_norm(m, np.zeros((12, 8, 8)), method="sketch", tol=0.2, probes=probes, return_direction=True)
    v = np.asarray(r.direction).reshape(12, d)
    rayleigh = np.sum((v @ J.T) ** 2, axis=1)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert np.allclose(rayleigh, r.ritz, rtol=1e-10)
    assert np.all(rayleigh <= truth(J) * (1 + 1e-12))


def test_probe_blocks_are_the_householder_q_factor_and_orthogonal_to_the_kept_rows():
    """CholeskyQR2 and BCGS2 give the Q factor with positive-diagonal R (that of a Householder
    QR with signs fixed, computed here with numpy), orthonormal to 1e-12, also for an
    ill-conditioned block (Cholesky fails: the Householder fallback)."""
    from fimaudit._array import namespace
    from fimaudit.blackbox.probes import extend, orthonormalise

    xp, rng = namespace(np.zeros(1)), np.random.default_rng(5)
    G = rng.standard_normal((2, 300, 40))
    Q, R = np.linalg.qr(G)
    ref = Q * np.sign(np.diagonal(R, axis1=1, axis2=2))[:, None, :]
    assert np.allclose(orthonormalise(xp, G), ref, atol=1e-12)
    bad = G.copy()
    bad[:, :, 1] = bad[:, :, 0] + 1e-12 * bad[:, :, 1]  # cond ~ 1e12: GᵀG is singular in float64
    P = orthonormalise(xp, bad)
    assert np.abs(np.swapaxes(P, 1, 2) @ P - np.eye(40)).max() < 1e-12
    kept = np.swapaxes(ref, 1, 2)  # (2, 40, 300)
    rows = [kept]
    for m in (100, 160):  # the last block fills R^300 exactly
        rows.append(extend(xp, np.concatenate(rows, axis=1), m, seed=m))
    allq = np.concatenate(rows, axis=1)
    assert allq.shape == (2, 300, 300)
    assert np.abs(allq @ np.swapaxes(allq, 1, 2) - np.eye(300)).max() < 1e-12


def test_auto_below_the_exact_limit_honours_tol_and_the_plan_names_what_runs():
    """d = 64 ≤ AUTO_EXACT_MAX_D: with tol, ``auto`` runs the sequential sketch where its
    first look is below d (it may stop there and never sends more than exact's d columns),
    exact where it is not; fa.plan names the method that runs, and the rows carry halfwidth
    and tol_met either way (exact: a point interval before finite-difference error)."""
    d = 64
    J = jacobian(SPECTRA["rank-1"], d, seed=3)
    x, lam = np.zeros((20, d)), truth(J)
    exact_calls = fa.plan(Linear(J), x, method="exact").calls_per_input
    for tol, want in ((0.3, "sketch"), (0.1, "sketch"), (0.005, "exact")):
        p, r = fa.plan(Linear(J), x, tol=tol), fa.fisher_norm(Linear(J), x, tol=tol)
        assert p.method == r.method == want, (tol, p.method, r.method)
        assert np.all(r.queries <= exact_calls) and np.all(r.tol_met) and np.all(r.halfwidth <= tol)
        assert np.mean(covers(r.lower, r.upper, lam)) >= 0.9
    assert np.all(r.probes == d) and np.all(r.halfwidth == 0) and np.allclose(r.value, lam, rtol=1e-10)
    r = fa.fisher_norm(Linear(J), x, tol=0.3)
    assert r.queries.min() < exact_calls  # rank 1: inputs stop at the first look, below d probes
    assert fa.plan(Linear(J), x).method == "exact"  # without tol, as before


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_plan_with_tol_uses_the_runs_level(monkeypatch, level):
    """The pilot's planned probes are one of the looks the run itself takes at its level
    (the looks move with α: the first look is where a rank-1 spectrum meets tol)."""
    from fimaudit.blackbox import sequential

    monkeypatch.setattr(sequential, "LEVEL", level)
    d = 128
    J = jacobian(SPECTRA["geometric"], d, seed=2)
    x = np.zeros((6, d))
    grid = sequential.looks(d, 0.2, 1 - level)
    p, r = fa.plan(Linear(J), x, method="sketch", tol=0.2), fa.fisher_norm(Linear(J), x, method="sketch", tol=0.2)
    assert p.probes in grid and set(r.probes.tolist()) <= set(grid), (p.probes, grid, r.probes)
    assert p.probes < d  # the pilot's estimate, not the cap
