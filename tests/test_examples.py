"""Every example runs offline and prints what it promises."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
NEEDS = {
    "torch_quickstart.py": ["torch", "fimaudit_torch", "onnx"],
    "keras_model.py": ["keras", "fimaudit_tensorflow"],
    "onnx_bounds.py": ["torch", "fimaudit_torch", "onnx"],
    "vendor_api.py": ["httpx", "fimaudit_http"],
    "dask_audit.py": ["distributed"],
    "build_demo_model.py": ["sklearn", "torch"],
}
EXPECT = {
    "torch_quickstart.py": "report:",
    "keras_model.py": "effective rank",
    "onnx_bounds.py": "certified L",
    "vendor_api.py": "exact:",
    "dask_audit.py": "same as a local run: True",
}


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_runs(name, tmp_path):
    for module in NEEDS[name]:
        pytest.importorskip(module)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert EXPECT[name] in proc.stdout, proc.stdout
