"""fa.audit's certified radius: certify="global" / "local" / None, checked against the exact
distance to the decision boundary of linear models and against ray searches on a ReLU MLP."""

import csv
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit import errors as E
from fimaudit.testing import save_gemm_onnx

from .test_audit import layer_norm_mlp

pytest.importorskip("onnx")
pytest.importorskip("fimaudit_onnx")


def closed_form(W, X):
    """The exact ℓ2 distance from each row of X to the nearest input whose top class differs,
    for logits x @ W: min_j (z_top − z_j) / ‖w_top − w_j‖."""
    z = X @ W
    out = []
    for zi in z:
        t = int(np.argmax(zi))
        out.append(min((zi[t] - zi[j]) / np.linalg.norm(W[:, t] - W[:, j]) for j in range(W.shape[1]) if j != t))
    return np.array(out)


def _linear(tmp, seed, d=4, C=3, n=8):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, C)).astype(np.float32)
    path = os.path.join(tmp, f"linear{seed}.onnx")
    save_gemm_onnx(W, path)
    return path, W.astype(np.float64), rng.standard_normal((n, d)).astype(np.float32)


def _mlp(path, seed, d=3, hidden=16, C=3):
    """A ReLU MLP as an ONNX graph, and the same network in float64 numpy."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    W1, b1 = rng.standard_normal((d, hidden)).astype(np.float32), rng.standard_normal(hidden).astype(np.float32)
    W2, b2 = rng.standard_normal((hidden, C)).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "W2", "b2"], ["logits"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", C])],
        [numpy_helper.from_array(v, k) for k, v in dict(W1=W1, b1=b1, W2=W2, b2=b2).items()],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    p = [v.astype(np.float64) for v in (W1, b1, W2, b2)]
    return lambda x: np.maximum(x @ p[0] + p[1], 0.0) @ p[2] + p[3]


def test_local_radius_on_a_linear_model_is_the_exact_distance_within_bisection(tmp_path):
    path, W, X = _linear(str(tmp_path), 0, n=12)
    exact = closed_form(W, X.astype(np.float64))
    glob = fa.audit(path, X, progress=False)
    local = fa.audit(path, X, progress=False, certify="local")
    g = np.array([r["certified_radius"] for r in glob.rows])
    r = np.array([r["certified_radius"] for r in local.rows])
    L = glob.summary["bound"]["lipschitz"]
    assert np.allclose(g, [row["margin"] / (np.sqrt(2) * L) for row in glob.rows])
    assert all(row["radius_from"] == "global" for row in glob.rows)
    assert np.all(g <= r) and np.all(r <= exact * (1 + 1e-5)), (g, r, exact)
    assert np.all(r >= 0.97 * exact)  # CROWN is exact on a linear map: only the bisection's step is lost
    assert [row["radius_from"] for row in local.rows] == ["local" if a > b else "global" for a, b in zip(r, g)]
    assert local.summary["radius"]["certificate"] == "local" and local.summary["radius"]["failed"] == 0
    assert local.summary["radius"]["local_rows"] == int(np.sum(r > g)) > 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), d=st.integers(1, 5), C=st.integers(2, 5))
def test_global_le_local_le_exact_distance_on_random_linear_models(seed, d, C):
    with tempfile.TemporaryDirectory() as tmp:
        path, W, X = _linear(tmp, seed, d, C, n=3)
        g = [r["certified_radius"] for r in fa.audit(path, X, progress=False).rows]
        r = [r["certified_radius"] for r in fa.audit(path, X, progress=False, certify="local").rows]
    exact = closed_form(W, X.astype(np.float64))
    assert np.all(np.array(g) <= np.array(r)) and np.all(np.array(r) <= exact * (1 + 1e-5) + 1e-9), (g, r, exact)


def _ray_distance(f, x, top, rng, rays=400, far=50.0):
    """The smallest distance along random rays at which the top class changes (bisection on
    each ray that changes it by ``far``): an upper bound on the distance to the boundary."""
    best = np.inf
    for v in rng.standard_normal((rays, x.size)):
        v /= np.linalg.norm(v)
        ts = np.linspace(0, far, 2001)[1:]
        changed = np.flatnonzero(f(x + ts[:, None] * v).argmax(1) != top)
        if changed.size:
            lo, hi = (ts[changed[0] - 1] if changed[0] else 0.0), ts[changed[0]]
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if f((x + mid * v)[None]).argmax(1)[0] == top else (lo, mid)
            best = min(best, hi)
    return best


@pytest.mark.filterwarnings("ignore::fimaudit.errors.NoiseDominatesWarning")  # λ_max's FD brackets, not radii
def test_local_radius_of_a_relu_mlp_is_sound_and_no_smaller_than_the_global_one(tmp_path):
    path = str(tmp_path / "mlp.onnx")
    f = _mlp(path, 3)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5, 3)).astype(np.float32)
    g = [r["certified_radius"] for r in fa.audit(path, X, progress=False).rows]
    a = fa.audit(path, X, progress=False, certify="local")
    r = [row["certified_radius"] for row in a.rows]
    assert a.summary["radius"]["local_rows"] > 0
    for i, x in enumerate(X.astype(np.float64)):
        top = int(f(x[None]).argmax())
        assert r[i] >= g[i] and r[i] <= _ray_distance(f, x, top, rng)
        v = rng.standard_normal((3000, 3))  # points inside the certified ball keep the class
        pts = x + v / np.linalg.norm(v, axis=1, keepdims=True) * r[i] * rng.random((3000, 1)) ** (1 / 3)
        assert np.all(f(pts).argmax(1) == top)


def test_certify_none_gives_no_radius_and_a_bad_value_names_the_choices(tmp_path):
    path, _, X = _linear(str(tmp_path), 1)
    a = fa.audit(path, X, progress=False, certify=None)
    assert a.summary["bound"]["available"] and a.summary["radius"] is None
    assert all("certified_radius" not in r for r in a.rows)
    a.save(str(tmp_path / "none"))
    assert "<th>certified radius</th>" not in (tmp_path / "none" / "report.html").read_text()
    with pytest.raises(E.InvalidArgumentError, match="'global'.*'local'.*None") as info:
        fa.audit(path, X, progress=False, certify="crown")
    assert isinstance(info.value, ValueError)


def test_the_report_names_the_certificate_and_escapes_why_the_local_one_failed(tmp_path):
    from fimaudit.audit.report import render

    path, _, X = _linear(str(tmp_path), 6, n=3)
    a = fa.audit(path, X, progress=False, certify="local")
    assert "local CROWN certificate" in render(a) and "(local)</td>" in render(a)
    a.summary["radius"].update(failed=2, reason="<b>no rule</b>")
    page = render(a)
    assert "failed for 2 inputs (&lt;b&gt;no rule&lt;/b&gt;)" in page and "<b>no rule" not in page
    a.summary["radius"] = dict(certificate="global")
    assert "from the global graph bound" in render(a) and "local CROWN" not in render(a)
    del a.summary["radius"]  # an audit saved before the choice existed: the global certificate
    assert "from the global graph bound" in render(a)


def test_resuming_keeps_the_journaled_local_radii(tmp_path, monkeypatch):
    import fimaudit.bounds.local as local

    path, _, X = _linear(str(tmp_path), 2, n=6)
    journal = str(tmp_path / "j.sqlite")
    first = fa.audit(path, X, progress=False, certify="local", journal=journal, batch_size=2)

    def fail(*args, **kwargs):
        raise AssertionError("a journaled local radius was computed again")

    monkeypatch.setattr(local, "certified_radius", fail)
    again = fa.audit(path, X, progress=False, certify="local", journal=journal, batch_size=2)
    assert [r["certified_radius"] for r in again.rows] == [r["certified_radius"] for r in first.rows]
    assert [r["radius_from"] for r in again.rows] == [r["radius_from"] for r in first.rows]
    calls = []

    def zero(model, x, **kwargs):
        calls.append((kwargs["input_domain"], kwargs["global_cap"]))
        return np.zeros(len(x))

    monkeypatch.setattr(local, "certified_radius", zero)  # another input domain: radii computed anew
    other = fa.audit(path, X, progress=False, certify="local", journal=journal, batch_size=2, input_domain=(-9, 9))
    assert calls == [((-9, 9), True)] * len(X)
    assert all(r["radius_from"] == "global" for r in other.rows)


def test_a_layer_norm_model_gets_local_radii_on_its_input_domain():
    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    net, m = layer_norm_mlp(torch)
    x = np.random.default_rng(0).random((2, 8)).astype(np.float32)
    a = fa.audit(m, x, progress=False, certify="local", input_domain=(0.0, 1.0))
    g = fa.audit(m, x, progress=False, input_domain=(0.0, 1.0))
    assert a.summary["radius"]["failed"] == 0 and a.summary["radius"]["local_rows"] == 2
    net64 = net.double()
    rng = np.random.default_rng(1)
    for row, grow, xi in zip(a.rows, g.rows, x.astype(np.float64)):
        r = row["certified_radius"]
        assert r > grow["certified_radius"] and row["radius_from"] == "local"
        v = rng.standard_normal((3000, 8))  # points of the ball inside the domain keep the class
        pts = np.clip(xi + v / np.linalg.norm(v, axis=1, keepdims=True) * r * rng.random((3000, 1)) ** (1 / 8), 0, 1)
        with torch.no_grad():
            z = net64(torch.tensor(np.vstack([xi[None], pts]))).numpy()
        assert np.all(z[1:].argmax(1) == z[0].argmax())


def test_the_local_pass_reports_progress(tmp_path, capsys):
    path, _, X = _linear(str(tmp_path), 4, n=3)
    fa.audit(path, X, progress=True, certify="local")
    assert "certified radius" in capsys.readouterr().err


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fimaudit.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_certify_local_end_to_end(tmp_path):
    path, W, X = _linear(str(tmp_path), 5, n=6)
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "out"
    p = _cli("audit", path, "--data", str(tmp_path / "X.npy"), "--out", str(out), "--certify", "local")
    assert p.returncode == 0, p.stderr
    assert "certified radius: local CROWN" in p.stdout
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    r = np.array([float(row["certified_radius"]) for row in rows])
    assert {row["radius_from"] for row in rows} <= {"local", "global"} and "local" in {x["radius_from"] for x in rows}
    assert np.all(r <= closed_form(W, X.astype(np.float64)) * (1 + 1e-5))
    assert "local CROWN certificate" in (out / "report.html").read_text()
    assert _cli("report", str(out)).returncode == 0  # results.json with the new fields loads back
    assert fa.Audit.load(str(out)).summary["radius"]["certificate"] == "local"
    p = _cli("audit", path, "--data", str(tmp_path / "X.npy"), "--out", str(out), "--certify", "none")
    assert p.returncode == 0 and "certified radius" not in p.stdout, p.stderr
    p = _cli("audit", path, "--data", str(tmp_path / "X.npy"), "--out", str(out), "--certify", "crown")
    assert p.returncode == 2 and "global" in p.stderr and "local" in p.stderr and "none" in p.stderr
