"""The core imports no framework; plugins are found through entry points."""

import subprocess
import sys

import pytest

import fimaudit as fa

FRAMEWORKS = ["torch", "tensorflow", "keras", "onnxruntime", "cupy", "jax", "hypothesis", "httpx"]


def test_import_fimaudit_pulls_in_no_framework():
    code = (
        "import sys, fimaudit, fimaudit.models, fimaudit.fisher, fimaudit.linalg\n"
        "import numpy as np\n"
        "from fimaudit.testing import MLPModel\n"
        "m = MLPModel.random([3, 4, 2])\n"
        "fimaudit.fisher_norm(m, np.ones((2, 3)))\n"
        "bb = fimaudit.wrap(m.forward, input_shape=(3,), output='logits')\n"
        "fimaudit.fisher_norm(bb, np.ones((2, 3)), budget=30)\n"
        "fimaudit.installed_adapters()\n"
        f"print(sorted(set({FRAMEWORKS!r}) & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_torch_plugin_is_registered_and_claims_modules():
    torch = pytest.importorskip("torch")
    assert "torch" in fa.installed_adapters()
    m = fa.wrap(torch.nn.Linear(3, 2).eval())
    assert type(m).__name__ == "TorchModel" and isinstance(m, fa.Model)
    assert fa.wrap(m) is m
    assert fa.wrap(m, likelihood="bernoulli").likelihood == "bernoulli" and m.likelihood == "categorical"
