"""``fa.audit(..., tol=)`` and ``fimaudit audit --tol`` on black boxes against dense float64 truth.

The model is linear, z = W x with a categorical likelihood, served as a plain Python function
(a black box: finite differences), so λ_max = λ_max(Wᵀ(diag p − ppᵀ)W) is computed here in
float64 with numpy, independently of the estimators. Each input draws its own probes, so the
n inputs of an audit are n independent runs of the sequential sketch: coverage is asserted at
≥ 0.9 over 60 of them, where the construction promises ≥ 0.95 (P(Bin(60, 0.05) > 6) ≈ 4%
for a sketch at exactly 0.95; the error spending puts its coverage higher).
"""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.errors import PrecisionNotReachedWarning
from fimaudit.testing import save_gemm_onnx

D, C = 48, 6
W = np.random.default_rng(0).standard_normal((C, D)) * np.geomspace(1.0, 0.1, D)  # a decaying input spectrum
X = np.random.default_rng(1).standard_normal((60, D)) * 0.3


def truth(x):
    z = x @ W.T
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.array([np.linalg.eigvalsh(W.T @ (np.diag(q) - np.outer(q, q)) @ W)[-1] for q in p])


class Counting:
    """z = W x as a black box that counts the rows it is sent."""

    def __init__(self):
        self.rows = 0

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        self.rows += len(x)
        return x @ W.T


def test_audit_with_tol_covers_the_truth_and_books_every_row():
    f = Counting()
    m = fa.wrap(f, input_shape=(D,), output="logits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionNotReachedWarning)
        a = fa.audit(m, X, method="sketch", tol=0.1, progress=False, batch_size=20)
    lam = truth(X)
    low, high = (np.array([r[k] for r in a.rows]) for k in ("lower", "upper"))
    assert np.mean((low <= lam * (1 + 1e-6)) & (lam * (1 - 1e-6) <= high)) >= 0.9
    assert sum(r["queries"] for r in a.rows) == f.rows  # rows sent = rows counted
    hw = np.array([r["halfwidth"] for r in a.rows])
    met = np.array([r["tol_met"] for r in a.rows])
    assert np.array_equal(met, hw <= 0.1)
    assert np.all((np.array([r["probes"] for r in a.rows]) <= D) & (np.array([r["probes"] for r in a.rows]) >= 1))
    p = a.summary["precision"]
    assert p["rows"] == 60 and p["met"] == int(met.sum()) and p["halfwidth_max"] == pytest.approx(hw.max())
    assert a.settings["tol"] == 0.1
    # the top inputs carry the sequential sketch's Ritz direction: a unit vector whose Rayleigh
    # quotient vᵀFv (F in float64 from W) lies in [lower − fd error, λ_max]
    for t in a.top:
        v = np.asarray(t["direction"])
        x = np.asarray(t["input"])
        z = W @ x
        q = np.exp(z - z.max())
        q /= q.sum()
        F = W.T @ (np.diag(q) - np.outer(q, q)) @ W
        assert np.linalg.norm(v) == pytest.approx(1.0)
        assert v @ F @ v <= truth(x[None])[0] * (1 + 1e-6)
        assert v @ F @ v >= 0.5 * truth(x[None])[0]


@settings(max_examples=12, deadline=None)
@given(budget=st.integers(40, 160), tol=st.sampled_from([0.02, 0.05, 0.1, 0.3]))
def test_audit_never_passes_its_budget_and_flags_what_missed_tol(budget, tol):
    f = Counting()
    m = fa.wrap(f, input_shape=(D,), output="logits")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        a = fa.audit(m, X[:4], method="sketch", budget=budget, tol=tol, progress=False)
    ok = [r for r in a.rows if r["status"] == "ok"]
    assert all(r["queries"] <= budget for r in a.rows if r["queries"] is not None)
    assert sum(r["queries"] or 0 for r in a.rows) == f.rows
    missed = [r["index"] for r in ok if not r["tol_met"]]
    msgs = [str(w.message) for w in seen if issubclass(w.category, PrecisionNotReachedWarning)]
    assert bool(missed) == bool(msgs)
    if missed:
        assert all("budget=" in s and "tol=" in s for s in msgs)
        assert f"(first: {missed[:10]})" in " ".join(msgs)
    assert all(r["tol_met"] == (r["halfwidth"] <= tol) and r["lower"] <= r["upper"] for r in ok)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fimaudit.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture()
def onnx_files(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("fimaudit_onnx")
    save_gemm_onnx(W.T, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", X[:20].astype(np.float32))
    return tmp_path


def test_cli_tol_reports_the_precision_and_names_its_flags(onnx_files):
    d = onnx_files
    base = ["audit", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--method", "sketch"]
    p = _cli(*base, "--out", str(d / "a"), "--tol", "0.2")
    assert p.returncode == 0, p.stderr
    assert "precision:" in p.stdout and "within ±0.2" in p.stdout
    rows = json.loads((d / "a" / "results.json").read_text())["rows"]
    lam = truth(X[:20].astype(np.float32).astype(np.float64))
    low, high = np.array([r["lower"] for r in rows]), np.array([r["upper"] for r in rows])
    assert np.mean((low <= lam * (1 + 1e-3)) & (lam * (1 - 1e-3) <= high)) >= 0.85  # 20 runs, float32 model
    assert all(r["probes"] >= 1 and isinstance(r["tol_met"], bool) for r in rows)
    tight = _cli(*base, "--out", str(d / "b"), "--tol", "0.01", "--budget", "40")
    assert tight.returncode == 4, tight.stderr  # the precision asked for was not reached: incomplete
    assert "missed --tol" in tight.stderr
    assert "--budget" in tight.stderr and "--tol" in tight.stderr and "budget=" not in tight.stderr
    summary = json.loads((d / "b" / "results.json").read_text())["summary"]["precision"]
    assert summary["missed"] > 0 and "missed tol" in tight.stdout
    assert all(r["queries"] <= 40 for r in json.loads((d / "b" / "results.json").read_text())["rows"])
    bad = _cli(*base, "--out", str(d / "c"), "--tol", "1.5")
    assert bad.returncode == 2 and "--tol" in bad.stderr


@settings(max_examples=12, deadline=None)
@given(noise=st.sampled_from([0.0, 1e-4, 1e-2]), tol=st.sampled_from([0.02, 0.1, 0.3]), seed=st.integers(0, 2**16))
def test_tol_met_is_the_precision_of_the_bracket_reported_finite_differences_included(noise, tol, seed):
    """Each row's halfwidth is (upper − lower)/(upper + lower) of the bracket it reports, after the
    finite-difference error widens it, and tol_met says whether that is ≤ tol; a noisy service
    whose error alone is wider than tol is named as such, with the option that can help."""
    rng = np.random.default_rng(seed)

    def served(x):
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return x @ W.T + noise * rng.standard_normal((len(x), C))

    m = fa.wrap(served, input_shape=(D,), output="logits")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = fa.fisher_norm(m, X[:4], tol=tol, seed=seed)
    hw = (r.upper - r.lower) / (r.upper + r.lower)
    assert np.allclose(r.halfwidth, hw, rtol=1e-9, atol=1e-12)
    assert np.array_equal(r.tol_met, hw <= tol)
    said = " ".join(str(w.message) for w in caught if issubclass(w.category, PrecisionNotReachedWarning))
    assert bool(said) == (not r.tol_met.all())
    if noise >= 1e-2 and not r.tol_met.all():
        assert "finite-difference error (see .fd_error) alone is wider than tol" in said
