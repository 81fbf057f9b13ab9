"""Black-box auditing against the white-box answer on the same weights."""

import warnings

import numpy as np
import pytest

import fimaudit as fa
from fimaudit import errors as E
from fimaudit.blackbox import dct_basis, ecnoise
from fimaudit.blackbox.noise import TABLE_ROWS
from fimaudit.testing import MLPModel
from fimaudit.testing.kinked import kinked_relu_network

D, C = 64, 10
MLP = MLPModel.random([D, 32, C], seed=1, scale=2.0)
X = np.random.default_rng(0).standard_normal((8, D))
TRUTH = fa.fisher_norm(MLP, X).value


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def probs_fn(b):
    return softmax(MLP.forward(b))


def test_exact_black_box_matches_white_box():
    bb = fa.wrap(probs_fn, input_shape=(D,), output="probs")
    r = fa.fisher_norm(bb, X, method="exact", return_direction=True)
    ref = fa.fisher_norm(MLP, X, return_direction=True)
    assert np.allclose(r.value, ref.value, rtol=1e-6)
    assert np.all((r.lower <= ref.value) & (ref.value <= r.upper))  # FD-widened bracket holds
    assert np.allclose(np.abs(np.sum(r.direction * ref.direction, 1)), 1, atol=1e-6)
    assert np.all(r.queries == bb.costs().setup + 2 * D)
    assert np.allclose(fa.fisher_trace(bb, X).value, fa.fisher_trace(MLP, X).value, rtol=1e-6)
    assert np.allclose(fa.fisher_spectrum(bb, X, k=3).values, fa.fisher_spectrum(MLP, X, k=3).values, rtol=1e-6)


@pytest.mark.parametrize("scheme,rtol", [("central", 1e-6), ("forward", 1e-4), ("richardson", 1e-8)])
def test_schemes(scheme, rtol):
    bb = fa.wrap(MLP.forward, input_shape=(D,), output="logits", scheme=scheme)
    r = fa.fisher_norm(bb, X, method="exact")
    assert np.allclose(r.value, TRUTH, rtol=rtol)
    assert np.all(r.queries == bb.costs().setup + {"central": 2, "forward": 1, "richardson": 4}[scheme] * D)


@pytest.mark.parametrize("budget", [20, 21, 40, 75, 144, 145, 500])
def test_budget_is_never_exceeded_and_queries_are_counted(budget):
    bb = fa.wrap(probs_fn, input_shape=(D,), output="probs")
    plan = fa.plan(bb, X, budget=budget)
    r = fa.fisher_norm(bb, X, budget=budget)
    sent = bb.calls / len(X)
    assert sent <= budget and np.all(r.queries == sent) and plan.calls_per_input == sent
    assert plan.total_calls == bb.calls and plan.method == r.method.split("-")[0]


def _sketch_runs(k, seeds):
    bb = fa.wrap(MLP.forward, input_shape=(D,), output="logits", noise=0.0, step=1e-5)
    return [fa.fisher_norm(bb, X, method="sketch", budget=bb.costs().setup + 2 * k, seed=s) for s in seeds]


def test_sketch_lower_bound_and_interval_coverage_at_d_over_8():
    runs = _sketch_runs(D // 8, range(60))
    ritz = np.array([r.ritz for r in runs])
    assert np.all(ritz <= TRUTH * (1 + 1e-6))  # certified, up to finite-difference error
    assert all(np.all(r.ritz <= r.lower) for r in runs)
    cover = np.mean([(r.lower <= TRUTH) & (TRUTH <= r.upper) for r in runs])
    assert cover >= 0.9, cover


def test_sketch_error_shrinks_like_one_over_root_k():
    err = {k: np.mean([np.abs(r.value / TRUTH - 1) for r in _sketch_runs(k, range(40))]) for k in (4, 16)}
    assert err[16] / err[4] <= 0.7, err  # theory: 1/2 for four times the probes
    exact = _sketch_runs(D, [0])[0]
    assert np.allclose(exact.value, TRUTH, rtol=1e-6) and np.allclose(exact.upper, exact.lower)


def test_seed_estimator_is_far_below_and_sketch_is_not():
    """The seed's estimator, max over random unit probes of vᵀFv, sees about tr F / d."""
    rng = np.random.default_rng(0)
    V = rng.standard_normal((100, D))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    F = fa.testing.dense_fisher(MLP, X)
    seed_est = np.max(np.einsum("kd,nde,ke->nk", V, F, V), axis=1)
    sketch = _sketch_runs(D // 4, [0])[0]
    assert np.median(seed_est / TRUTH) < 0.5 < np.median(sketch.value / TRUTH)


def test_dct_and_user_bases():
    B = dct_basis((3, 8, 8), 20)
    assert np.allclose(B @ B.T, np.eye(20), atol=1e-12)
    assert np.allclose(dct_basis((16,), 16) @ dct_basis((16,), 16).T, np.eye(16), atol=1e-12)
    img = MLPModel.random([3 * 8 * 8, 16, 5], seed=2, input_shape=(3, 8, 8))
    x = np.random.default_rng(1).random((3, 3, 8, 8))
    truth = fa.fisher_norm(img, x).value
    bb = fa.wrap(img.forward, input_shape=(3, 8, 8), output="logits")
    r = fa.fisher_norm(bb, x, method="sketch", budget=bb.costs().setup + 40, probes="dct")
    assert r.method == "sketch-dct" and np.all(r.lower <= truth * (1 + 1e-6)) and np.all(np.isinf(r.upper))
    user = np.random.default_rng(2).standard_normal((192, 192))
    ru = fa.fisher_norm(bb, x, method="sketch", budget=bb.costs().setup + 2 * 192, probes=user)
    assert np.allclose(ru.value, truth, rtol=1e-6)  # a full basis is exact


def test_ecnoise_recovers_known_noise():
    rng = np.random.default_rng(0)
    t = np.linspace(-4, 4, 9) * 1e-3
    for sigma in [1e-3, 1e-7]:
        tables = np.sin(1 + t)[None, :, None] + sigma * rng.standard_normal((200, 9, 3))
        est, zeros = ecnoise(tables)
        assert 0.7 < np.median(est) / sigma < 1.4 and np.all(zeros == 0)


def test_noisy_service_is_flagged_and_bracketed():
    """A service that adds noise to its answers: detected by the repeated query, the step
    grows with the measured noise, and the widened bracket still holds the truth."""
    rng = np.random.default_rng(5)

    def noisy(b):
        return MLP.forward(b) + 1e-4 * rng.standard_normal((len(b), C))

    bb = fa.wrap(noisy, input_shape=(D,), output="logits")
    r = fa.fisher_norm(bb, X, method="exact")
    assert r.nondeterministic.all()
    assert np.allclose(r.value, TRUTH, rtol=0.1)  # 1e-4 nats of noise on every answer
    assert np.all((0.3e-4 < r.fd_noise) & (r.fd_noise < 3e-4))
    quiet = fa.fisher_norm(fa.wrap(MLP.forward, input_shape=(D,), output="logits"), X, method="exact")
    assert np.all(r.fd_step > 10 * quiet.fd_step)  # the step grows with the measured noise
    assert np.all((r.lower <= TRUTH) & (TRUTH <= r.upper))
    with pytest.raises(E.NondeterministicModelError, match="differently"):
        fa.fisher_norm(fa.wrap(noisy, input_shape=(D,), output="logits", on_nondeterminism="raise"), X)

    def very_noisy(b):
        return MLP.forward(b) + 1e-2 * rng.standard_normal((len(b), C))

    with pytest.warns(E.NoiseDominatesWarning, match="may exceed 10%"):
        r = fa.fisher_norm(fa.wrap(very_noisy, input_shape=(D,), output="logits"), X, method="exact")
    assert np.all((r.lower <= TRUTH) & (TRUTH <= r.upper))


def test_rounded_probabilities():
    """A vendor rounding probabilities to 4 decimals: quantisation is seen as noise; the
    bracket holds the truth."""
    bb = fa.wrap(lambda b: np.round(probs_fn(b), 4), input_shape=(D,), output="probs", prob_tol=1e-3)
    with pytest.warns(E.NoiseDominatesWarning):
        r = fa.fisher_norm(bb, X, method="exact")
    assert np.all((r.lower <= TRUTH) & (TRUTH <= r.upper))


def _bad(out):
    return lambda b: out(b)


BAD = [
    ("negative probs", lambda b: probs_fn(b) - 0.2, "negative"),
    ("NaN probs", lambda b: np.where(np.arange(C) == 3, np.nan, probs_fn(b)), "NaN"),
    ("probs do not sum to 1", lambda b: probs_fn(b) * 0.5, "sum to"),
    ("wrong number of outputs", lambda b: probs_fn(b)[:, :7], "num_outputs=10"),
    ("wrong batch length", lambda b: probs_fn(b)[:-1], "one row of outputs per input"),
    ("not an array", lambda b: "oops", "not an array"),
]


@pytest.mark.parametrize("name,fn,fix", BAD, ids=[b[0] for b in BAD])
def test_malformed_answers_are_refused(name, fn, fix):
    bb = fa.wrap(fn, input_shape=(D,), output="probs", num_outputs=C)
    with pytest.raises(E.InvalidModelOutputError) as info:
        fa.fisher_norm(bb, X)
    assert isinstance(info.value, ValueError) and fix in str(info.value)


ARGS = [
    ("no input_shape", lambda: fa.wrap(probs_fn), "input_shape"),
    ("budget too small", lambda: fa.fisher_norm(fa.wrap(probs_fn, input_shape=(D,)), X, budget=11), "budget >= 20"),
    (
        "exact over budget",
        lambda: fa.fisher_norm(fa.wrap(probs_fn, input_shape=(D,)), X, method="exact", budget=50),
        "method='sketch'",
    ),
    (
        "lanczos on a black box",
        lambda: fa.fisher_norm(fa.wrap(probs_fn, input_shape=(D,)), X, method="lanczos"),
        "'sketch'",
    ),
    (
        "hutchpp on a black box",
        lambda: fa.fisher_trace(fa.wrap(probs_fn, input_shape=(D,)), X, method="hutchpp"),
        "'hutchinson'",
    ),
    ("bad scheme", lambda: fa.wrap(probs_fn, input_shape=(D,), scheme="backward"), "central"),
    (
        "bad probes",
        lambda: fa.fisher_norm(fa.wrap(probs_fn, input_shape=(D,)), X, method="sketch", probes="haar"),
        "'dct'",
    ),
]


@pytest.mark.parametrize("name,call,fix", ARGS, ids=[a[0] for a in ARGS])
def test_bad_arguments(name, call, fix):
    with pytest.raises(E.InvalidArgumentError) as info:
        call()
    assert fix in str(info.value)


def test_callable_query_cache_pays_for_no_row_twice(tmp_path):
    calls = []

    def counted(b):
        calls.append(len(b))
        return probs_fn(b)

    cache = tmp_path / "answers.sqlite"
    first = fa.fisher_norm(fa.wrap(counted, input_shape=(D,), cache=cache, cache_key="mlp-v1"), X, method="exact")
    sent = sum(calls)
    # the noise probe's repeated base query is answered by the cache: one row per input fewer
    assert sent == first.queries.sum() - len(X)
    again = fa.fisher_norm(fa.wrap(counted, input_shape=(D,), cache=cache, cache_key="mlp-v1"), X, method="exact")
    assert sum(calls) == sent  # every answer came from the cache
    assert np.array_equal(again.value, first.value)


def test_kink_repair_fixes_straddled_probes_and_counts_its_calls():
    errs = {"ignore": [], "repair": []}
    covered = []
    for seed in range(6):
        fn, X, truth = kinked_relu_network(seed)
        for kinks in ("ignore", "repair"):
            bb = fa.wrap(fn, input_shape=(X.shape[1],), output="probs", kinks=kinks)
            r = fa.fisher_norm(bb, X, method="exact")
            errs[kinks].append(np.abs(r.value / truth - 1))
            assert int(np.sum(r.queries)) == bb.inner.calls  # every call is on some input's bill
            if kinks == "repair":
                assert np.any(r.queries > bb.costs().setup + 2 * X.shape[1])
                covered.append((r.lower <= truth * (1 + 1e-9)) & (truth <= r.upper * (1 + 1e-9)))
            else:
                assert np.all(r.queries == bb.costs().setup + 2 * X.shape[1])
    ignore, repair = np.concatenate(errs["ignore"]), np.concatenate(errs["repair"])
    assert np.median(repair) < 0.5 * np.median(ignore), (np.median(repair), np.median(ignore))
    assert np.mean(np.concatenate(covered)) >= 0.95
    with pytest.raises(E.InvalidArgumentError, match="kinks"):
        fa.wrap(probs_fn, input_shape=(D,), output="probs", kinks="smooth")


def test_sequential_bracket_at_k_equal_d_covers_kinks_it_does_not_re_measure():
    """At k = d the sequential sketch is exact up to finite differences, and its rounds
    re-measure no kink (2 rows per probe, nothing more): the half gaps of each probe's own
    one-sided quotients carry the error. On ReLU networks with units near their kinks the
    bracket covers the active-pattern λ_max (float64) over 60 networks (960 inputs), and
    the gaps are what widens it: without them it covered about two thirds."""
    cover, gaps = [], []
    for seed in range(60):
        fn, X, truth = kinked_relu_network(seed, n=16)
        bb = fa.wrap(fn, input_shape=(X.shape[1],), output="probs")
        with warnings.catch_warnings():  # the widened brackets are warned about
            warnings.simplefilter("ignore", E.NoiseDominatesWarning)
            r = fa.fisher_norm(bb, X, method="sketch", tol=1e-3, seed=seed)
        assert np.all(r.probes == X.shape[1]) and np.all(r.queries == bb.costs().setup + 2 * X.shape[1])
        cover.append((r.lower <= truth * (1 + 1e-9)) & (truth <= r.upper * (1 + 1e-9)))
        gaps.append(r.upper - r.lower > 1e-3 * truth)
    assert np.mean(np.concatenate(cover)) >= 0.93, np.mean(np.concatenate(cover))
    assert np.mean(np.concatenate(gaps)) > 0.3  # the kinks widened a good share of the brackets


def test_extrapolation_removes_the_kink_bias_of_a_relu_cnn():
    """Central differences across the kinks of a ReLU/max-pool CNN are biased low (a unit
    switching off within the step takes its own aligned share out of the column); the bias is
    linear in the step, so 2 G(h) − G(2h) cancels it. Truth: torch autodiff in float64 on
    the same weights, the black box a float32 probability service."""
    torch = pytest.importorskip("torch")
    from fimaudit_torch.testing import relu_maxpool_cnn

    errs = {"repair": [], "extrapolate": []}
    trace_errs, covered = [], []
    for seed in range(4):
        net = relu_maxpool_cnn(seed)
        x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
        truth = fa.fisher_norm(net, x.double().numpy(), method="exact").value
        true_trace = fa.fisher_trace(net, x.double().numpy(), method="exact").value

        def fn(b, net=net):
            with torch.no_grad():
                return torch.softmax(net(torch.from_numpy(b)), dim=1).numpy()

        X, d = x.numpy(), 3 * 16 * 16
        for kinks in errs:
            bb = fa.wrap(fn, input_shape=(3, 16, 16), output="probs", kinks=kinks)
            r = fa.fisher_norm(bb, X, method="exact")
            errs[kinks].append(r.value / truth - 1)
            if kinks == "extrapolate":
                set_up = r.queries - 4 * d  # every column at h and at 2h; ECnoise may widen its table
                assert np.all((set_up >= bb.costs().setup) & ((set_up - bb.costs().setup) % TABLE_ROWS == 0))
                assert fa.plan(bb, X, method="exact").calls_per_input == bb.costs().setup + 4 * d
                assert int(np.sum(r.queries)) == bb.inner.calls
                covered.append((r.lower <= truth) & (truth <= r.upper))
                trace_errs.append(fa.fisher_trace(bb, X, method="exact").value / true_trace - 1)
    rep, ext, tr = (np.concatenate(v) for v in (errs["repair"], errs["extrapolate"], trace_errs))

    def se(v):
        return v.std(ddof=1) / np.sqrt(v.size)

    assert rep.mean() < -4 * se(rep), (rep.mean(), se(rep))  # biased low without it
    assert abs(ext.mean()) < 3 * se(ext) and abs(ext.mean()) < 0.25 * abs(rep.mean()), (ext.mean(), se(ext))
    assert abs(tr.mean()) < 3 * se(tr)  # the exact trace is read off the same extrapolated Gram
    assert np.mean(np.concatenate(covered)) >= 0.95


def test_extrapolation_needs_central_differences_and_leaves_sketches_alone():
    with pytest.raises(E.InvalidArgumentError, match="scheme='central'"):
        fa.wrap(probs_fn, input_shape=(D,), output="probs", kinks="extrapolate", scheme="forward")
    bb = fa.wrap(probs_fn, input_shape=(D,), output="probs", kinks="extrapolate")
    r = fa.fisher_norm(bb, X, method="sketch", budget=100)
    assert np.all(r.queries == bb.costs().setup + 2 * ((100 - bb.costs().setup) // 2))  # 2 calls per probe
    exact = bb.costs().setup + 4 * D
    assert fa.plan(bb, X, budget=exact - 1).method == "sketch" and fa.plan(bb, X, budget=exact).method == "exact"
    r = fa.fisher_norm(bb, X, budget=exact)
    assert np.all(r.queries == exact) and np.allclose(r.value, TRUTH, rtol=1e-5)


def test_the_diagnostics_record_accounts_for_every_row():
    """The rows a linearization sent are its nominal ones plus the kink re-measures its
    diagnostics record counts, 2 per re-measured probe."""
    from fimaudit.ledger import QueryLedger

    fn, X, _ = kinked_relu_network(1)
    bb = fa.wrap(fn, input_shape=(X.shape[1],), output="probs")
    ledger = QueryLedger(None, len(X))
    lin = bb.linearize(X, ledger=ledger)
    d = X.shape[1]
    lin.jvp_many(np.broadcast_to(np.eye(d, dtype=X.dtype), (len(X), d, d)))
    diag = lin.diagnostics
    assert np.all(ledger.spent == bb.costs().setup + 2 * d + diag.repair_rows) and bb.inner.calls == ledger.spent.sum()
    assert np.all(diag.repair_rows == 2 * diag.repaired) and diag.repaired.sum() > 0
    assert np.all(diag.kink_count <= diag.repaired) and diag.step.shape == diag.noise.shape == (len(X),)


def test_budgets_hold_with_kink_repair():
    fn, X, _ = kinked_relu_network(0)
    bb = fa.wrap(fn, input_shape=(X.shape[1],), output="probs")
    r = fa.fisher_norm(bb, X, method="sketch", budget=20)
    assert np.all(r.queries <= 20) and int(np.sum(r.queries)) == bb.inner.calls


def test_one_noise_warning_per_call_at_the_callers_line():
    """A call over several batches warns once, for the inputs of every batch, at the line of
    the call (not once per batch at a line inside fimaudit)."""
    import warnings

    rng = np.random.default_rng(3)

    def very_noisy(b):
        return MLP.forward(b) + 1e-2 * rng.standard_normal((len(b), C))

    bb = fa.wrap(very_noisy, input_shape=(D,), output="logits")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = fa.fisher_norm(bb, X, method="exact", batch_size=3)  # 8 inputs: batches of 3, 3 and 2
    noisy = [w for w in caught if issubclass(w.category, E.NoiseDominatesWarning)]
    assert len(noisy) == 1, [str(w.message) for w in noisy]
    assert noisy[0].filename == __file__
    flagged = np.flatnonzero(r.fd_error > 0.1 * r.value)
    assert flagged.size > 3 and flagged.max() >= 6  # inputs from the last batch too
    worst = flagged[np.argsort(-(r.fd_error / r.value)[flagged], kind="stable")][:10]  # by error over λ_max
    assert f"for {flagged.size} inputs (worst first: {worst.tolist()}," in str(noisy[0].message)


def test_the_noise_warning_names_the_term_that_widened_the_bracket():
    """fd_error's parts for three inputs, each with one dominant source (noise; truncation;
    the gaps of probes never re-measured): the warning's cause names the one that dominates
    the worst inputs, and the error is the sum of the parts given in the fd_error docstring."""
    from fimaudit.blackbox.diagnostics import FDDiagnostics
    from fimaudit.blackbox.fd_error import fd_error, noisy_inputs

    value, k, C, m = np.array([1.0]), 16, 10, 0.5

    def diag(noise=1e-12, tau=0.0, gap2=0.0, count=0.0):
        one = lambda v: np.array([v])  # noqa: E731
        return FDDiagnostics(
            "central", one(1e-3), one(noise), one(tau), one(False), gap_error2=one(gap2), gap_count=one(count)
        )

    cases = {
        "noise": diag(noise=1e-4),
        "truncation": diag(tau=0.05),
        "gaps": diag(gap2=0.02, count=8.0),
    }
    for kind, dg in cases.items():
        err = fd_error(np, dg, m, C, value, k)
        kappa = np.sqrt(dg.gap_error2 * dg.gap_count / k)
        eps = np.sqrt(m) * dg.noise / dg.step
        noise = 2 * 3 * eps + (eps * (np.sqrt(C) + np.sqrt(k))) ** 2
        want = noise + (6 * dg.truncation + 9 * dg.truncation**2) + 2 * kappa + kappa**2
        assert np.allclose(err, want, rtol=1e-12)
        note = noisy_inputs(err, value, dg, 0, k)
        assert note is not None, kind
        said = {"noise": "measured output noise", "truncation": "when the step is halved", "gaps": "one-sided"}
        assert said[kind] in note.cause, (kind, note.cause)
        assert all(said[other] not in note.cause for other in said if other != kind)
