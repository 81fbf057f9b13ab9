"""The main job: `fimaudit demo` runs offline and its numbers are right."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("fimaudit_onnx")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_demo_writes_a_correct_report(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "fimaudit.cli", "demo", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "most sensitive inputs" in proc.stdout and (out / "report.html").exists()
    data = json.loads((out / "results.json").read_text())
    assert data["summary"]["inputs"] == 360 == len(data["rows"]) and data["summary"]["accuracy"] > 0.9
    bound = data["summary"]["bound"]
    assert bound["available"] and all(r["lambda_max"] <= bound["fisher_bound"] for r in data["rows"])
    assert (out / "results.csv").read_text().count("\n") == 361

    # the same weights in torch, differentiated exactly: the black-box values agree
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    import fimaudit as fa
    from fimaudit.demo import demo_paths

    spec = importlib.util.spec_from_file_location("build", ROOT / "examples" / "build_demo_model.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    net = build.cnn().double().eval()
    weights = {
        t.name: torch.from_numpy(numpy_helper.to_array(t).astype(np.float64))
        for t in onnx.load(demo_paths()[0]).graph.initializer
    }
    net.load_state_dict(weights)
    X = np.load(demo_paths()[1])["X_test"].astype(np.float64)
    idx = [0, 7, 100, 200]
    truth = fa.fisher_norm(net, X[idx]).value  # numpy in, numpy out
    got = np.array([data["rows"][i]["lambda_max"] for i in idx])
    assert np.allclose(got, truth, rtol=2e-2)


def test_demo_reports_an_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "fimaudit.cli", "demo", "--out", str(blocker / "x")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "cannot write the report" in proc.stderr
