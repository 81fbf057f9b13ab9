"""The demo: audit the shipped digits model on its shipped test split, fully offline.

The model is a 64-32-10 tanh MLP trained on scikit-learn's digits
(``examples/build_demo_model.py``), evaluated through :class:`fimaudit.testing.MLPModel`
(numpy, hand-written Jacobians). :func:`fimaudit.audit` computes λ_max(F(x)) and tr F(x)
exactly for every test image; the report (results.json, results.csv, report.html) is
written and a summary printed.
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

from .audit import audit
from .testing.models import MLPModel


def load_demo():
    """(model, X_test, y_test) of the shipped digits demo."""
    with resources.files("fimaudit").joinpath("data/demo_digits.npz").open("rb") as f:
        z = np.load(f)
        model = MLPModel([z["W0"], z["W1"]], [z["b0"], z["b1"]], input_shape=(8, 8))
        return model, z["X_test"].astype(np.float64).reshape(-1, 8, 8), z["y_test"]


def run(out="fimaudit-report", echo=print):
    model, X, y = load_demo()
    a = audit(model, X, y, method="exact", progress=False)
    report = a.save(out)
    s = a.summary
    echo(f"fimaudit demo: digits MLP (8×8 inputs, 10 classes), {s['inputs']} test images, accuracy {s['accuracy']:.3f}")
    echo("λ_max quantiles: " + ", ".join(f"{k} {v:.3g}" for k, v in s["lambda_max_quantiles"].items()))
    m = s["lambda_max_mean"]
    echo(f"mean λ_max {m['value']:.3g} (95% bootstrap interval {m['low']:.3g} to {m['high']:.3g})")
    echo(f"Spearman correlation of λ_max with the logit margin: {s['spearman_lambda_vs_margin']:+.2f}")
    lam = a.lambda_max
    wrong = np.array([r["label"] != r["prediction"] for r in a.rows])
    if wrong.any():
        echo(f"median λ_max: misclassified {np.median(lam[wrong]):.3g}, correct {np.median(lam[~wrong]):.3g}")
    echo("most sensitive inputs (worst-case local KL per unit ‖δ‖²):")
    echo("  index  label  pred  confidence   λ_max")
    for t in a.top:
        echo(f"  {t['index']:5d}  {t['label']:5d}  {t['prediction']:4d}  {t['confidence']:10.3f}  {t['lambda_max']:.3g}")
    echo(f"report: {os.path.abspath(report)}")
    return a
