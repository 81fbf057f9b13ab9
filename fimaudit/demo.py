"""The demo: audit the shipped digits model on its shipped test split, fully offline.

The model is a 64-32-10 tanh MLP trained on scikit-learn's digits
(``examples/build_demo_model.py``), evaluated through :class:`fimaudit.testing.MLPModel`
(numpy, hand-written Jacobians). For each test image the demo reports λ_max(F(x)) and
tr F(x) exactly, the prediction, confidence and logit margin, writes ``results.json``
and ``results.csv``, and prints a summary.
"""

from __future__ import annotations

import csv
import json
import os
import time
from importlib import resources

import numpy as np
from scipy import stats

from .fisher import fisher_norm, fisher_trace
from .testing.models import MLPModel


def load_demo():
    """(model, X_test, y_test) of the shipped digits demo."""
    with resources.files("fimaudit").joinpath("data/demo_digits.npz").open("rb") as f:
        z = np.load(f)
        model = MLPModel([z["W0"], z["W1"]], [z["b0"], z["b1"]], input_shape=(8, 8))
        return model, z["X_test"].astype(np.float64).reshape(-1, 8, 8), z["y_test"]


def run(out="fimaudit-report", echo=print):
    model, X, y = load_demo()
    t0 = time.perf_counter()
    norm = fisher_norm(model, X, method="exact", return_direction=True)
    trace = fisher_trace(model, X, method="exact")
    seconds = time.perf_counter() - t0
    z = model.forward(X)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pred = z.argmax(1)
    top2 = np.sort(z, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    lam = norm.value
    rows = [dict(index=i, label=int(y[i]), prediction=int(pred[i]), confidence=float(p[i, pred[i]]),
                 margin=float(margin[i]), lambda_max=float(lam[i]), trace=float(trace.value[i]),
                 queries=int(norm.queries[i])) for i in range(len(X))]
    rho = stats.spearmanr(lam, margin)
    q = np.quantile(lam, [0.0, 0.25, 0.5, 0.75, 0.95, 1.0])
    summary = dict(inputs=len(X), accuracy=float((pred == y).mean()), seconds=seconds,
                   lambda_max_quantiles=dict(zip(["min", "q25", "median", "q75", "q95", "max"], map(float, q))),
                   spearman_lambda_vs_margin=float(rho.statistic),
                   lambda_max_misclassified_median=float(np.median(lam[pred != y])) if np.any(pred != y) else None,
                   lambda_max_correct_median=float(np.median(lam[pred == y])))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(dict(schema="fimaudit.demo/1", model="digits MLP 64-32-10 (tanh)", method=norm.method,
                       likelihood=norm.likelihood, summary=summary, rows=rows), f, indent=1)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    echo(f"fimaudit demo: digits MLP (64 inputs, 10 classes), {len(X)} test images, "
         f"accuracy {summary['accuracy']:.3f}")
    echo(f"exact λ_max(F) and tr F for all inputs in {seconds:.2f} s ({int(norm.queries[0])} products per input)")
    echo("λ_max quantiles: " + ", ".join(f"{k} {v:.3g}" for k, v in summary["lambda_max_quantiles"].items()))
    echo(f"Spearman correlation of λ_max with the logit margin: {summary['spearman_lambda_vs_margin']:+.2f}")
    if summary["lambda_max_misclassified_median"] is not None:
        echo(f"median λ_max: misclassified {summary['lambda_max_misclassified_median']:.3g}, "
             f"correct {summary['lambda_max_correct_median']:.3g}")
    echo("most sensitive inputs (worst-case local KL per unit ‖δ‖²):")
    echo("  index  label  pred  confidence  margin   λ_max")
    for i in np.argsort(-lam)[:5]:
        r = rows[i]
        echo(f"  {r['index']:5d}  {r['label']:5d}  {r['prediction']:4d}  {r['confidence']:10.3f}  "
             f"{r['margin']:6.2f}  {r['lambda_max']:.3g}")
    echo(f"wrote {os.path.join(out, 'results.json')} and results.csv")
    return summary
