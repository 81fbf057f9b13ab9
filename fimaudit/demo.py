"""The demo: audit the shipped digits CNN on its shipped test split, fully offline.

The model is a small CNN trained on scikit-learn's digits and shipped as ONNX
(``examples/build_demo_model.py``); fimaudit audits it as a black box through
onnxruntime (finite differences, exact over all 64 input pixels) and derives its certified
Lipschitz bound from the graph. The report (results.json, results.csv, report.html) is
written and a summary printed.
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

from .audit import audit
from .errors import MissingAdapterError
from .plugins import wrap


def demo_paths():
    root = resources.files("fimaudit").joinpath("data")
    return str(root.joinpath("demo_digits_cnn.onnx")), str(root.joinpath("demo_digits_test.npz"))


def load_demo():
    """(wrapped model, X_test, y_test) of the shipped digits demo."""
    onnx_path, data_path = demo_paths()
    try:
        model = wrap(onnx_path)
    except MissingAdapterError as err:
        raise MissingAdapterError(f"the demo runs its ONNX model through fimaudit-onnx: {err}") from None
    with open(data_path, "rb") as f:
        z = np.load(f)
        return model, z["X_test"], z["y_test"]


def run(out="fimaudit-report", echo=print):
    model, X, y = load_demo()
    a = audit(model, X, y, method="exact", progress=False)
    report = a.save(out)
    s = a.summary
    echo(
        f"fimaudit demo: digits CNN (ONNX, 1×8×8 inputs, 10 classes), {s['inputs']} test images, "
        f"accuracy {s['accuracy']:.3f}; audited as a black box, {a.rows[0]['queries']} model calls per image"
    )
    echo("λ_max quantiles: " + ", ".join(f"{k} {v:.3g}" for k, v in s["lambda_max_quantiles"].items()))
    m = s["lambda_max_mean"]
    echo(f"mean λ_max {m['value']:.3g} (95% bootstrap interval {m['low']:.3g} to {m['high']:.3g})")
    echo(f"Spearman correlation of λ_max with the logit margin: {s['spearman_lambda_vs_margin']:+.2f}")
    lam = a.lambda_max
    wrong = np.array([r["label"] != r["prediction"] for r in a.rows])
    if wrong.any():
        echo(f"median λ_max: misclassified {np.median(lam[wrong]):.3g}, correct {np.median(lam[~wrong]):.3g}")
    b = s.get("bound") or {}
    if b.get("available"):
        echo(
            f"certified from the graph: logit Lipschitz L ≤ {b['lipschitz']:.4g}, so λ_max ≤ {b['fisher_bound']:.4g} "
            "for every input"
        )
    echo("most sensitive inputs (worst-case local KL per unit ‖δ‖²):")
    echo("  index  label  pred  confidence   λ_max")
    for t in a.top:
        echo(
            f"  {t['index']:5d}  {t['label']:5d}  {t['prediction']:4d}  {t['confidence']:10.3f}  {t['lambda_max']:.3g}"
        )
    echo(f"report: {os.path.abspath(report)}")
    return a
