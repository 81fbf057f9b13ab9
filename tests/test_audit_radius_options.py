"""fa.audit's certify_options: passed on to the local radius search, checked before any model
call, named in the summary and in the journal's key; the CLI's --certify-* flags."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit import errors as E

from .test_audit_radius import _cli, _linear, _mlp

pytest.importorskip("onnx")
pytest.importorskip("fimaudit_onnx")


@pytest.mark.filterwarnings("ignore::fimaudit.errors.NoiseDominatesWarning")  # λ_max's FD brackets, not radii
def test_the_options_reach_the_local_search_and_its_radii_stay_sound(tmp_path):
    path = str(tmp_path / "mlp.onnx")
    f = _mlp(path, 7, d=3, hidden=24)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((4, 3)).astype(np.float32)
    options = dict(alpha=0, branches=6, iterations=4)
    a = fa.audit(path, X, progress=False, certify="local", certify_options=options)
    g = np.array([r["certified_radius"] for r in fa.audit(path, X, progress=False).rows])
    direct = fa.certified_radius(path, X, **options)
    r = np.array([row["certified_radius"] for row in a.rows])
    assert np.array_equal(r, np.maximum(g, direct))
    assert a.summary["radius"]["options"] == options
    for x, ri in zip(X.astype(np.float64), r):  # points inside each certified ball keep the class
        top = int(f(x[None]).argmax())
        v = rng.standard_normal((3000, 3))
        pts = x + v / np.linalg.norm(v, axis=1, keepdims=True) * ri * rng.random((3000, 1)) ** (1 / 3)
        assert np.all(f(pts).argmax(1) == top)


def test_a_journal_keeps_local_radii_apart_by_options(tmp_path, monkeypatch):
    import fimaudit.bounds.local as local

    path, _, X = _linear(str(tmp_path), 3, n=4)
    journal = str(tmp_path / "j.sqlite")
    calls = []

    def record(model, x, **kwargs):
        calls.append({k: kwargs[k] for k in ("alpha", "branches", "iterations") if k in kwargs})
        return np.full(len(x), 1e-9 * (1 + len(calls)))

    monkeypatch.setattr(local, "certified_radius", record)
    runs = [dict(branches=4), dict(branches=8), dict(branches=4), None, dict(branches=4, alpha=0)]
    for options in runs:
        fa.audit(path, X, progress=False, certify="local", certify_options=options, journal=journal, batch_size=2)
    assert calls == [dict(branches=4)] * 4 + [dict(branches=8)] * 4 + [{}] * 4 + [dict(branches=4, alpha=0)] * 4


BAD = st.one_of(
    st.sampled_from([[("alpha", 3)], "branches=4", 4, ("alpha",)]),  # not a dict
    st.dictionaries(
        st.sampled_from(["alpha", "branches", "iterations", "beta", "tighten", "reuse"]), st.just(1)
    ).filter(lambda d: any(k not in ("alpha", "branches", "iterations") for k in d)),
    st.builds(
        lambda k, v: {k: v},
        st.sampled_from(["alpha", "branches", "iterations"]),
        st.one_of(
            st.integers(-(10**6), -1),
            st.integers(10**7, 10**9),
            st.booleans(),
            st.floats(0.5, 3.5),
            st.text(max_size=3),
        ),
    ),
)


def _counted():
    calls = []

    def model(x):
        calls.append(len(x))
        return np.zeros((len(x), 2))

    return model, calls


@settings(max_examples=40, deadline=None)
@given(options=BAD)
def test_bad_options_are_refused_before_any_model_call(options):
    model, calls = _counted()
    with pytest.raises(E.InvalidArgumentError) as info:
        fa.audit(model, np.zeros((2, 3)), progress=False, certify="local", certify_options=options)
    assert isinstance(info.value, ValueError) and calls == []
    named = options if isinstance(options, dict) else {}
    assert "certify_options" in str(info.value) or any(k in str(info.value) for k in named)


@settings(max_examples=12, deadline=None)
@given(
    certify=st.sampled_from(["global", None]),
    options=st.dictionaries(st.sampled_from(["alpha", "branches", "iterations"]), st.integers(0, 8), min_size=1),
)
def test_options_without_the_local_certificate_are_refused(certify, options):
    with pytest.raises(E.InvalidArgumentError, match="certify='local'"):
        fa.audit(
            lambda x: np.zeros((len(x), 2)), np.zeros((2, 3)), progress=False, certify=certify, certify_options=options
        )


def test_cli_certify_flags(tmp_path):
    path, _, X = _linear(str(tmp_path), 5, n=3)
    np.save(tmp_path / "X.npy", X)
    base = ["audit", path, "--data", str(tmp_path / "X.npy"), "--out", str(tmp_path / "out")]
    p = _cli(*base, "--certify-branches", "4")
    assert p.returncode == 2 and "--certify-branches need --certify local" in p.stderr, p.stderr
    p = _cli(*base, "--certify", "local", "--certify-alpha", "-1")
    assert p.returncode == 2 and "--certify-alpha: alpha must be" in p.stderr, p.stderr
    p = _cli(*base, "--certify", "local", "--certify-branches", "4", "--certify-iterations", "3")
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "out" / "results.json").read_text())["summary"]
    assert summary["radius"]["options"] == dict(branches=4, iterations=3)
