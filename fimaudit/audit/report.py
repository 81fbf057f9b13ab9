"""report.html: one self-contained page (inline SVG, no scripts, no network) with the
λ_max distribution, λ_max against confidence, and the most sensitive inputs beside their
directions.

Every value taken from the audit — labels, statuses, error messages, settings, numbers
that turn out to be text — is written through ``html.escape`` (quotes included), and the
page carries a Content-Security-Policy (``default-src 'none'; style-src 'unsafe-inline';
img-src data:``) that forbids scripts and requests, so a tampered results.json renders as
text and runs nothing. Saving and loading are in :mod:`fimaudit.audit.files`.
"""

from __future__ import annotations

import html
import json
import math

import numpy as np

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _text(v):
    """Any value as escaped text ("" for None)."""
    return "" if v is None else html.escape(str(v), quote=True)


def _is_real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _fmt(v, spec=".4g"):
    """A number formatted with ``spec``; anything else as escaped text."""
    return format(v, spec) if _is_real(v) else _text(v)


def _finite(v):
    return _is_real(v) and math.isfinite(v)


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
    try:
        a = np.nan_to_num(np.asarray(values, dtype=np.float64).reshape(shape), nan=0.0, posinf=0.0, neginf=0.0)
    except (TypeError, ValueError):  # not numbers of that shape: no picture
        return ""
    if a.ndim == 3:
        a = a.mean(axis=0) if not diverging else a[np.argmax(np.abs(a).reshape(a.shape[0], -1).max(1))]
    if a.ndim != 2:
        a = a.reshape(1, -1)
    h, w = a.shape
    if a.size == 0:
        return ""
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


def _facts(s):
    """The summary table; every value is formatted or escaped here, once."""
    facts = [(k, _fmt(s.get(k), "")) for k in ("inputs", "completed", "failed")]
    if "accuracy" in s:
        facts.append(("accuracy", _fmt(s["accuracy"], ".3f")))
    mean = s.get("lambda_max_mean")
    if isinstance(mean, dict):
        value, low, high = (_fmt(mean.get(k)) for k in ("value", "low", "high"))
        facts.append(("mean λ_max (95% bootstrap)", f"{value} [{low}, {high}]"))
    q = s.get("lambda_max_quantiles")
    facts += [(f"λ_max {_text(k)}", _fmt(v)) for k, v in (q.items() if isinstance(q, dict) else ())]
    if "spearman_lambda_vs_margin" in s:
        facts.append(("Spearman(λ_max, margin)", _fmt(s["spearman_lambda_vs_margin"], "+.2f")))
    return "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)


def _bound(bound):
    if not isinstance(bound, dict):
        return ""
    if bound.get("available") is True:
        layers = bound.get("layers")
        layer_rows = "".join(
            f"<tr><td>{_text(layer.get('node'))}</td><td>{_text(layer.get('op'))}</td>"
            f"<td>{_fmt(layer.get('local'))}</td><td>{_fmt(layer.get('cumulative'))}</td></tr>"
            for layer in (layers if isinstance(layers, list) else ())
            if isinstance(layer, dict)
        )
        return (
            f"<h2>Certified bound from the graph</h2><p>Logit Lipschitz constant L ≤ {_fmt(bound.get('lipschitz'))}; "
            f"λ_max(F(x)) ≤ {_fmt(bound.get('fisher_bound'))} for every input; each input's top class is certified "
            "within margin / (√2 L) (column certified_radius).</p><table><tr><th>node</th><th>op</th>"
            f"<th>local</th><th>cumulative</th></tr>{layer_rows}</table>"
        )
    return f"<h2>Certified bound from the graph</h2><p>Not available: {_text(bound.get('reason'))}</p>"


def _top_rows(audit, image_like):
    tops = []
    for t in audit.top:
        pics = ""
        if image_like:
            direction = t.get("direction")
            pics = (
                f"<td>{_svg_image(t.get('input'), audit.input_shape)}</td>"
                f"<td>{_svg_image(direction, audit.input_shape, diverging=True) if direction else ''}</td>"
            )
        tops.append(
            f"<tr><td>{_text(t.get('index'))}</td><td>{_text(t.get('label'))}</td><td>{_text(t.get('prediction'))}</td>"
            f"<td>{_fmt(t.get('confidence'), '.3f')}</td><td>{_fmt(t.get('lambda_max'))}</td>{pics}</tr>"
        )
    return "".join(tops)


def render(audit):
    """The report page of ``audit`` (any values: each is escaped or formatted as a number)."""
    s = audit.summary
    ok = [r for r in audit.rows if _finite(r.get("lambda_max")) and r["lambda_max"] > 0]
    logs = np.log10([float(r["lambda_max"]) for r in ok]) if ok else np.array([])
    plotted = [(x, r) for x, r in zip(logs, ok) if _finite(r.get("confidence"))]
    if plotted or not ok:
        xs = np.array([x for x, _ in plotted])
        conf = [min(max(float(r["confidence"]), 0.0), 1.0) for _, r in plotted]
        good = [r.get("label") is None or r.get("label") == r.get("prediction") for _, r in plotted]
        scatter = _svg_scatter(xs, conf, good)
    else:
        scatter = "<p>No confidences: a Gaussian model's outputs are means.</p>"
    image_like = len(audit.input_shape) in (2, 3)
    head = "<th>input</th><th>top direction</th>" if image_like else ""
    tops = _top_rows(audit, image_like)
    settings = _text(json.dumps(audit.settings, default=str))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>fimaudit report</title>
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
<table>{_facts(s)}</table>
<div class="plots">
<figure><figcaption>Distribution of log10 λ_max</figcaption>{_svg_hist(logs)}</figure>
<figure><figcaption>λ_max against confidence (red: misclassified)</figcaption>{scatter}</figure>
</div>
<h2>Most sensitive inputs</h2>
<table><tr><th>index</th><th>label</th><th>prediction</th><th>confidence</th><th>λ_max</th>{head}</tr>{tops}</table>
{_bound(s.get("bound"))}
<p>Settings: <code>{settings}</code></p>
</body></html>
"""
