"""The fimaudit command on an ONNX model: audit, the --fail-above gate, report."""

import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("fimaudit_onnx")
from onnx import TensorProto, helper  # noqa: E402

from fimaudit.testing import save_gemm_onnx  # noqa: E402


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fimaudit.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 3)).astype(np.float32)
    save_gemm_onnx(W, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((10, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 3, 10))
    return tmp_path, W


def test_audit_writes_the_report_and_gates(files):
    d, W = files
    p = _cli(
        "audit",
        str(d / "m.onnx"),
        "--data",
        str(d / "x.npy"),
        "--labels",
        str(d / "y.npy"),
        "--out",
        str(d / "out"),
        "--json",
        "--quiet",
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["completed"] == 10
    data = json.loads((d / "out" / "results.json").read_text())
    x = np.load(d / "x.npy").astype(np.float64)
    import fimaudit as fa
    from fimaudit.testing import LinearModel

    truth = fa.fisher_norm(LinearModel(W.T.astype(np.float64)), x).value
    assert np.allclose([r["lambda_max"] for r in data["rows"]], truth, rtol=2e-3)
    gate = _cli(
        "audit",
        str(d / "m.onnx"),
        "--data",
        str(d / "x.npy"),
        "--out",
        str(d / "out2"),
        "--quiet",
        "--fail-above",
        str(float(np.median(truth))),
    )
    assert gate.returncode == 3 and "above" in gate.stderr
    again = _cli("report", str(d / "out"))
    assert again.returncode == 0 and (d / "out" / "report.html").exists()


def test_audit_passes_the_kink_option_to_the_finite_differences(files):
    d, W = files
    p = _cli(
        "audit",
        str(d / "m.onnx"),
        "--data",
        str(d / "x.npy"),
        "--out",
        str(d / "out"),
        "--json",
        "--quiet",
        "--method",
        "exact",
        "--kinks",
        "extrapolate",
    )
    assert p.returncode == 0, p.stderr
    rows = json.loads((d / "out" / "results.json").read_text())["rows"]
    from fimaudit.blackbox.noise import NOISE_POINTS

    set_up = 1 + NOISE_POINTS + 3 + 2 * 2  # base point, ECnoise and slope, step-halving check
    assert all(r["queries"] == set_up + 4 * 4 for r in rows)  # every column at h and at 2h
    bad = _cli("audit", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--out", str(d / "o"), "--kinks", "smooth")
    assert bad.returncode == 2 and "--kinks" in bad.stderr


def test_bad_data_is_reported(files):
    d, _ = files
    np.save(d / "bad.npy", np.ones((3, 5), np.float32))
    p = _cli("audit", str(d / "m.onnx"), "--data", str(d / "bad.npy"), "--out", str(d / "o"))
    assert p.returncode == 2 and "expects" in p.stderr


def test_bound_prints_the_certified_constant(files):
    d, W = files
    p = _cli("bound", str(d / "m.onnx"), "--input-shape", "4", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert np.isclose(out["lipschitz"], np.linalg.norm(W.astype(np.float64), 2), rtol=1e-6)
    text = _cli("bound", str(d / "m.onnx"), "--input-shape", "4")
    assert "certified logit Lipschitz constant" in text.stdout


def test_bound_on_a_declared_input_domain(tmp_path):
    # x ↦ x ⊙ x is not globally Lipschitz; on [−1, 2]^4 its constant is 2 · max|x| = 4
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["y"], name="square")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "sq.onnx")
    p = _cli("bound", str(tmp_path / "sq.onnx"), "--input-shape", "4")
    assert p.returncode == 2 and "--input-domain LOW,HIGH" in p.stderr and "input_domain=" not in p.stderr  # its flag
    p = _cli("bound", str(tmp_path / "sq.onnx"), "--input-shape", "4", "--input-domain=-1,2", "--json")
    assert p.returncode == 0, p.stderr
    assert np.isclose(json.loads(p.stdout)["lipschitz"], 4.0)
    p = _cli("bound", str(tmp_path / "sq.onnx"), "--input-shape", "4", "--input-domain", "0")
    assert p.returncode == 2 and "LOW,HIGH" in p.stderr


def test_cli_prints_the_median_first_order_distance(files):
    from tests.test_first_order import projection_distance

    tmp_path, W = files
    x = np.load(tmp_path / "x.npy")
    p = _cli("audit", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    exact, _ = projection_distance(W.T.astype(np.float64), np.zeros(3), x.astype(np.float64))
    line = p.stdout.strip().splitlines()[-1]
    assert "median d₁" in line and "median λ_max" in line and "an estimate" in line
    assert float(line.split("median d₁ ")[1].split()[0]) == pytest.approx(float(np.median(exact)), rel=1e-3)
