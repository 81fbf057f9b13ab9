"""The main job: `fimaudit demo` runs offline and its numbers are right."""

import json
import subprocess
import sys

import numpy as np

from fimaudit.demo import load_demo
from fimaudit.testing import dense_fisher


def test_demo_writes_a_correct_report(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "fimaudit.cli", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "most sensitive inputs" in proc.stdout
    data = json.loads((out / "results.json").read_text())
    model, X, y = load_demo()
    assert data["summary"]["inputs"] == len(X) == len(data["rows"])
    assert data["summary"]["accuracy"] > 0.9
    idx = [0, 7, 100]
    ref = np.linalg.eigvalsh(dense_fisher(model, X[idx]))[:, -1]
    got = np.array([data["rows"][i]["lambda_max"] for i in idx])
    assert np.allclose(got, ref, rtol=1e-9)
    assert (out / "results.csv").read_text().count("\n") == len(X) + 1


def test_demo_reports_an_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "fimaudit.cli", "demo", "--out", str(blocker / "x")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "cannot write the report" in proc.stderr
