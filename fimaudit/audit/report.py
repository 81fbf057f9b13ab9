"""Writing an audit: results.json (versioned), results.csv, and report.html — one
self-contained page (inline SVG, no scripts, no network) with the λ_max distribution,
λ_max against confidence, and the most sensitive inputs beside their directions."""

from __future__ import annotations

import csv
import html
import json
import os

import numpy as np

from ..errors import InvalidArgumentError

COLUMNS = [
    "index",
    "label",
    "prediction",
    "confidence",
    "margin",
    "lambda_max",
    "lower",
    "upper",
    "trace",
    "queries",
    "seconds",
    "status",
    "certified_radius",
]


def save(audit, out):
    try:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(audit.to_dict(), f)
        with open(os.path.join(out, "results.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows({k: r.get(k) for k in COLUMNS} for r in audit.rows)
        with open(os.path.join(out, "report.html"), "w") as f:
            f.write(render(audit))
    except OSError as err:
        raise InvalidArgumentError(f"cannot write the report to {out!r}: {err.strerror}; pick another folder") from None
    return os.path.join(out, "report.html")


def _svg_hist(values, width=420, height=180, bins=30, label="log10 λ_max"):
    if len(values) == 0:
        return "<p>No values.</p>"
    counts, edges = np.histogram(values, bins=bins)
    top = max(counts.max(), 1)
    bw = (width - 40) / bins
    bars = "".join(
        f'<rect x="{30 + i * bw:.1f}" y="{height - 25 - c / top * (height - 40):.1f}" width="{bw - 1:.1f}" '
        f'height="{c / top * (height - 40):.1f}" fill="#3b6ea8"><title>{c} inputs in '
        f"[{edges[i]:.2f}, {edges[i + 1]:.2f})</title></rect>"
        for i, c in enumerate(counts)
    )
    axis = (
        f'<text x="30" y="{height - 8}" font-size="11">{edges[0]:.2f}</text>'
        f'<text x="{width - 40}" y="{height - 8}" font-size="11">{edges[-1]:.2f}</text>'
        f'<text x="{width / 2 - 30}" y="{height - 8}" font-size="11">{html.escape(label)}</text>'
    )
    return f'<svg class="plot" width="{width}" height="{height}" role="img" aria-label="histogram">{bars}{axis}</svg>'


def _svg_scatter(xs, ys, ok, width=420, height=220):
    if len(xs) == 0:
        return "<p>No values.</p>"
    x0, x1 = float(np.min(xs)), float(np.max(xs)) + 1e-12
    y0, y1 = 0.0, 1.0
    pts = "".join(
        f'<circle cx="{40 + (x - x0) / (x1 - x0) * (width - 60):.1f}" '
        f'cy="{height - 30 - (y - y0) / (y1 - y0) * (height - 50):.1f}" '
        f'r="2.5" fill="{"#3b6ea8" if good else "#c0392b"}" fill-opacity="0.6"/>'
        for x, y, good in zip(xs, ys, ok)
    )
    axis = (
        f'<text x="40" y="{height - 10}" font-size="11">log10 λ_max {x0:.2f}</text>'
        f'<text x="{width - 80}" y="{height - 10}" font-size="11">{x1:.2f}</text>'
        f'<text x="2" y="20" font-size="11">confidence 1</text><text x="2" y="{height - 30}" font-size="11">0</text>'
    )
    return f'<svg class="plot" width="{width}" height="{height}" role="img" aria-label="scatter">{pts}{axis}</svg>'


def _svg_image(values, shape, size=96, diverging=False):
    a = np.asarray(values, dtype=np.float64).reshape(shape)
    if a.ndim == 3:
        a = a.mean(axis=0) if not diverging else a[np.argmax(np.abs(a).reshape(a.shape[0], -1).max(1))]
    if a.ndim != 2:
        a = a.reshape(1, -1)
    h, w = a.shape
    if diverging:
        s = np.max(np.abs(a)) or 1.0
        norm = a / s
    else:
        lo, hi = a.min(), a.max()
        norm = (a - lo) / ((hi - lo) or 1.0)
    cw, ch = size / w, size / h
    cells = []
    for i in range(h):
        for j in range(w):
            v = norm[i, j]
            if diverging:
                c = (int(255 * (1 - max(v, 0))), int(255 * (1 - abs(v))), int(255 * (1 - max(-v, 0))))
            else:
                g = int(255 * v)
                c = (g, g, g)
            cells.append(
                f'<rect x="{j * cw:.2f}" y="{i * ch:.2f}" width="{cw + 0.05:.2f}" height="{ch + 0.05:.2f}" '
                f'fill="rgb{c}"/>'
            )
    return f'<svg width="{size}" height="{size}" role="img">{"".join(cells)}</svg>'


def _num(v):
    return "" if v is None else f"{v:.4g}"


def render(audit):
    s = audit.summary
    ok = [r for r in audit.rows if r["lambda_max"] is not None and r["lambda_max"] > 0]
    logs = np.log10([r["lambda_max"] for r in ok]) if ok else np.array([])
    conf = [r["confidence"] for r in ok]
    good = [r["label"] is None or r["label"] == r["prediction"] for r in ok]
    q = s.get("lambda_max_quantiles", {})
    mean = s.get("lambda_max_mean")
    facts = [("inputs", s.get("inputs")), ("completed", s.get("completed")), ("failed", s.get("failed"))]
    if "accuracy" in s:
        facts.append(("accuracy", f"{s['accuracy']:.3f}"))
    if mean:
        facts.append(("mean λ_max (95% bootstrap)", f"{mean['value']:.4g} [{mean['low']:.4g}, {mean['high']:.4g}]"))
    facts += [(f"λ_max {k}", f"{v:.4g}") for k, v in q.items()]
    if "spearman_lambda_vs_margin" in s:
        facts.append(("Spearman(λ_max, margin)", f"{s['spearman_lambda_vs_margin']:+.2f}"))
    facts_html = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    image_like = len(audit.input_shape) in (2, 3)
    tops = []
    for t in audit.top:
        pics = ""
        if image_like:
            pics = (
                f"<td>{_svg_image(t['input'], audit.input_shape)}</td>"
                f"<td>{_svg_image(t['direction'], audit.input_shape, diverging=True) if t['direction'] else ''}</td>"
            )
        tops.append(
            f"<tr><td>{t['index']}</td><td>{t['label']}</td><td>{t['prediction']}</td>"
            f"<td>{t['confidence']:.3f}</td><td>{t['lambda_max']:.4g}</td>{pics}</tr>"
        )
    head = "<th>input</th><th>top direction</th>" if image_like else ""
    bound = s.get("bound")
    if bound and bound.get("available"):
        layer_rows = "".join(
            f"<tr><td>{html.escape(str(layer['node']))}</td><td>{html.escape(layer['op'])}</td>"
            f"<td>{_num(layer['local'])}</td><td>{_num(layer['cumulative'])}</td></tr>"
            for layer in bound["layers"]
        )
        bound_html = (
            f"<h2>Certified bound from the graph</h2><p>Logit Lipschitz constant L ≤ {bound['lipschitz']:.4g}; "
            f"λ_max(F(x)) ≤ {bound['fisher_bound']:.4g} for every input; each input's top class is certified "
            "within margin / (√2 L) (column certified_radius).</p><table><tr><th>node</th><th>op</th>"
            f"<th>local</th><th>cumulative</th></tr>{layer_rows}</table>"
        )
    elif bound:
        bound_html = f"<h2>Certified bound from the graph</h2><p>Not available: {html.escape(bound['reason'])}</p>"
    else:
        bound_html = ""
    settings = html.escape(json.dumps({k: v for k, v in audit.settings.items()}, default=str))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fimaudit report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1000px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
.plots {{ display: flex; gap: 2em; flex-wrap: wrap; }} .plot {{ border: 1px solid #ddd; background: #fafafa; }}
code {{ font-size: 0.85em; }}
</style></head><body>
<h1>fimaudit report</h1>
<p>λ_max is the largest eigenvalue of the input-space Fisher information: the worst-case local KL divergence of the
model's output distribution per unit ‖δ‖² of input perturbation. Larger is more fragile.</p>
<table>{facts_html}</table>
<div class="plots">
<figure><figcaption>Distribution of log10 λ_max</figcaption>{_svg_hist(logs)}</figure>
<figure><figcaption>λ_max against confidence (red: misclassified)</figcaption>{_svg_scatter(logs, conf, good)}</figure>
</div>
<h2>Most sensitive inputs</h2>
<table><tr><th>index</th><th>label</th><th>prediction</th><th>confidence</th><th>λ_max</th>{head}</tr>{"".join(tops)}</table>
{bound_html}
<p>Settings: <code>{settings}</code></p>
</body></html>
"""
