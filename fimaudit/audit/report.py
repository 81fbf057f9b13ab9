"""report.html: one self-contained page (inline SVG and PNG data URIs, no scripts, no
network) with the summary, the provenance of the audit (versions, time, model and data
digests, settings), the warnings raised while it ran and the rows that did not finish, the
λ_max distribution, λ_max against confidence (:mod:`fimaudit.audit.report_plots`), the
certified graph bound, and every input in one table (:mod:`fimaudit.audit.report_table`).

Every value taken from the audit — labels, statuses, error messages, settings, numbers
that turn out to be text — is written through ``html.escape`` (quotes included), and the
page carries a Content-Security-Policy (``default-src 'none'; style-src 'unsafe-inline';
img-src data:``) that forbids scripts and requests, so a tampered results.json renders as
text and runs nothing. Saving and loading are in :mod:`fimaudit.audit.files`.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from . import report_plots
from .report_table import MISSING, certificate, finite, misclassified, table
from .report_table import fmt as _fmt
from .report_table import text as _text

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
RADIUS_TEXT = {  # what the column "certified radius" holds, by the audit's certificate
    "global": " Column “certified radius”: margin / (√2 L), from the global graph bound.",
    "local": " Column “certified radius”: the larger of margin / (√2 L) and the local CROWN certificate on ℓ2 "
    "balls around the input (fimaudit.certified_radius), marked (local) where that one is larger.",
}


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
    if "first_order_distance_median" in s:
        facts.append(("median first-order distance d₁", _fmt(s["first_order_distance_median"])))
    if "spearman_lambda_vs_margin" in s:
        facts.append(("Spearman(λ_max, margin)", _fmt(s["spearman_lambda_vs_margin"], "+.2f")))
    p = s.get("precision")
    if isinstance(p, dict) and p.get("rows"):
        facts.append((f"inputs within ±{_text(p.get('tol'))} (95% interval)", f"{_fmt(p.get('met'), '')}"))
        facts.append(
            (
                "relative half-width, median / max",
                f"{_fmt(p.get('halfwidth_median'), '.3g')} / {_fmt(p.get('halfwidth_max'), '.3g')}",
            )
        )
        facts.append(
            (
                "probes per input, median / max",
                f"{_fmt(p.get('probes_median'), '.0f')} / {_fmt(p.get('probes_max'), '')}",
            )
        )
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
            "within margin / (√2 L).</p><table><tr><th>node</th><th>op</th>"
            f"<th>local</th><th>cumulative</th></tr>{layer_rows}</table>"
        )
    return f"<h2>Certified bound from the graph</h2><p>Not available: {_text(bound.get('reason'))}</p>"


def _short(v, n=12):
    """A hex digest shortened to ``n`` characters (``n`` > 0), the whole digest in its tooltip; any other
    value as escaped text, "–" for None (so no value from the file is ever written into an attribute)."""
    if n and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{32,128}", v):
        return f'<code title="{v}">{v[:n]}…</code>'
    return MISSING if v is None else _text(v)


def _provenance(p):
    """The provenance table: versions, time, digests and the call's settings (all escaped)."""
    if not isinstance(p, dict) or not p:
        return "<h2>Provenance</h2><p>Not recorded (results.json was written by an older fimaudit).</p>"
    names = dict(fimaudit="fimaudit version", created="audit started (UTC)", python="Python", numpy="NumPy")
    names.update(
        platform="platform", model="model identity (SHA-256)", data="data (SHA-256)", labels="labels (SHA-256)"
    )
    rows = [(label, _short(p.get(k), 16 if k in ("model", "data", "labels") else 0)) for k, label in names.items()]
    call = p.get("settings") if isinstance(p.get("settings"), dict) else {}
    rows += [(f"setting {_text(k)}", _text(json.dumps(v, default=str))) for k, v in call.items()]
    extra = sorted(k for k in p if k not in names and k != "settings")
    rows += [(_text(k), _text(json.dumps(p[k], default=str))) for k in extra]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<h2>Provenance</h2><table class="provenance">{body}</table>'


def _warnings(recorded, rows):
    """Warnings raised during the audit and rows that did not finish "ok", each kind once with its count."""
    items = [
        (_text(w.get("category")), _text(w.get("message")), _text(w.get("count")))
        for w in (recorded if isinstance(recorded, list) else ())
        if isinstance(w, dict)
    ]
    statuses = Counter(str(r.get("status")) for r in rows if isinstance(r, dict) and r.get("status") != "ok")
    items += [("input status", _text(status), str(n)) for status, n in statuses.most_common()]
    if not items:
        return "<h2>Warnings</h2><p>No warning was raised and every input finished ok.</p>"
    body = "".join(f"<tr><td>{c}</td><td>{m}</td><td>{n}</td></tr>" for c, m, n in items)
    return (
        f'<h2>Warnings</h2><table class="warnings"><tr><th>kind</th><th>message</th><th>count</th></tr>{body}</table>'
    )


def _plots(rows):
    ok = [r for r in rows if isinstance(r, dict) and finite(r.get("lambda_max"))]
    lams = [float(r["lambda_max"]) for r in ok]
    hist = report_plots.histogram(lams)
    plotted = [r for r in ok if finite(r.get("confidence"))]
    if plotted:
        conf = [float(r["confidence"]) for r in plotted]
        scatter = report_plots.scatter(
            [float(r["lambda_max"]) for r in plotted], conf, [misclassified(r) for r in plotted]
        )
    elif ok:
        scatter = "<p>No confidences: a Gaussian model's outputs are means.</p>"
    else:
        scatter = "<p>No inputs to plot.</p>"
    return (
        f'<div class="plots"><figure><figcaption>Distribution of λ_max</figcaption>{hist}</figure>'
        f"<figure><figcaption>λ_max against confidence</figcaption>{scatter}</figure></div>"
    )


def render(audit):
    """The report page of ``audit`` (any values: each is escaped or formatted as a number)."""
    s = audit.summary
    radius = RADIUS_TEXT.get(certificate(audit), "")
    local = s.get("radius") if isinstance(s.get("radius"), dict) else {}
    failed = local.get("failed")
    if radius and isinstance(failed, int) and failed > 0:
        why = _text(local.get("reason"))
        radius += f" The local certificate failed for {failed} inputs ({why}); theirs is the global one."
    settings = _text(json.dumps(audit.settings, default=str))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>fimaudit report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: left; }}
table.inputs td {{ font-variant-numeric: tabular-nums; white-space: nowrap; }}
tr.miss {{ background: #fbeaea; }} .wrong {{ color: #c0392b; }}
img.thumb {{ image-rendering: pixelated; display: block; }}
.plots {{ display: flex; gap: 2em; flex-wrap: wrap; }} .plot {{ border: 1px solid #ddd; background: #fafafa; }}
.tick {{ fill: #333; }} .count {{ fill: #555; }}
code {{ font-size: 0.85em; }}
</style></head><body>
<h1>fimaudit report</h1>
<p>λ_max is the largest eigenvalue of the input-space Fisher information: the worst-case local KL divergence of the
model's output distribution per unit ‖δ‖² of input perturbation, a sensitivity. Larger is more fragile.
d₁ (column “d₁”, with the class it points to) is a first-order estimate of the ℓ2 distance to the nearest decision
boundary, min over classes j of (z_y − z_j) / ‖∇(z_y − z_j)‖: one DeepFool step, not a certificate. The certified
radius, when a graph bound exists, is a proven lower bound on that distance.</p>
<table>{_facts(s)}</table>
{_provenance(getattr(audit, "provenance", None))}
{_warnings(getattr(audit, "warnings", None), audit.rows)}
{_plots(audit.rows)}
{_bound(s.get("bound"))}
<h2>Inputs</h2>
<p>Every input, most sensitive first; λ_max with the bracket its estimator guarantees.{radius}</p>
{table(audit)}
<p>Settings: <code>{settings}</code></p>
</body></html>
"""
