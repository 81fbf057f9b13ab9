"""The report's table of inputs: every row of the audit, most sensitive first.

Rows are sorted by λ_max, descending; rows without a number (failed) come last, in index
order. Columns: rank, index, label ("–" when missing), prediction, confidence, margin,
λ_max with its bracket [lower, upper], the first-order distance d₁ and the class j it
points to (when any row has one: exact estimators), the certified radius (when the audit
carries a graph bound and a certificate; "(local)" where the local one gave it), queries,
status. A misclassified input (label given and not the prediction) is marked ✗ and tinted.
Image inputs get thumbnails (input and top direction, PNG data URIs,
:mod:`fimaudit.audit.report_png`) where results.json holds the input — the audit's ``top``
most sensitive — until the thumbnails reach ``THUMBNAIL_BYTES``; the page says how many were
drawn. At most ``MAX_ROWS`` rows are written (the rest are in results.csv).
"""

from __future__ import annotations

import html
import math

import numpy as np

from .report_png import data_uri, direction_pixels, input_pixels

THUMBNAIL_BYTES = 400_000
MAX_ROWS = 20_000
MISSING = "–"


def text(v):
    """Any value as escaped text ("" for None)."""
    return "" if v is None else html.escape(str(v), quote=True)


def is_real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def fmt(v, spec=".4g"):
    """A number formatted with ``spec``; anything else as escaped text."""
    return format(v, spec) if is_real(v) else text(v)


def finite(v):
    return is_real(v) and math.isfinite(v)


def misclassified(r):
    """Whether a row has a label and a prediction that differ."""
    label, pred = r.get("label"), r.get("prediction")
    return label is not None and pred is not None and label != pred


def ranked(rows):
    """The rows sorted by λ_max, descending; rows without a finite λ_max last, by position."""
    with_value = [r for r in rows if finite(r.get("lambda_max"))]
    without = [r for r in rows if not finite(r.get("lambda_max"))]
    return sorted(with_value, key=lambda r: -float(r["lambda_max"])) + without


def _thumbnails(audit):
    """{index: (input URI, direction URI)} for the stored inputs, within the byte budget; how many drawn."""
    shape = tuple(audit.input_shape)
    if len(shape) not in (2, 3):
        return {}, 0
    pics, used = {}, 0
    for t in audit.top:
        if not isinstance(t, dict):
            continue
        pic, way = data_uri(input_pixels(t.get("input"), shape)), data_uri(direction_pixels(t.get("direction"), shape))
        if not (pic or way):
            continue
        if used + len(pic) + len(way) > THUMBNAIL_BYTES:
            break
        used += len(pic) + len(way)
        pics[_key(t.get("index"))] = (pic, way)
    return pics, len(pics)


def _key(index):
    return int(index) if is_real(index) and float(index).is_integer() else text(index)


def _img(uri, alt):
    return f'<img class="thumb" src="{uri}" alt="{alt}" width="48" height="48">' if uri else ""


def _cells(r, rank, radius, pics, first=False):
    bad = misclassified(r)
    label = MISSING if r.get("label") is None else text(r.get("label"))
    bracket = f"[{fmt(r.get('lower'))}, {fmt(r.get('upper'))}]"
    cells = [
        fmt(rank, "d"),
        text(r.get("index")),
        label,
        text(r.get("prediction")) + (' <b class="wrong">✗</b>' if bad else ""),
        fmt(r.get("confidence"), ".3f"),
        fmt(r.get("margin"), ".3g"),
        fmt(r.get("lambda_max")),
        bracket,
    ]
    if first:
        cls = r.get("first_order_class")
        cells += [fmt(r.get("first_order_distance")), MISSING if cls is None else text(cls)]
    if radius:
        cells.append(fmt(r.get("certified_radius")) + (" (local)" if r.get("radius_from") == "local" else ""))
    status = text(r.get("status"))
    if r.get("tol_met") is False:  # a tol audit whose interval stayed wider than tol when the budget ran out
        status += f" · ±{fmt(r.get('halfwidth'), '.3g')}, wider than tol"
    cells += [text(r.get("queries")), status]
    if pics is not None:
        pic, way = pics.get(_key(r.get("index")), ("", ""))
        cells += [_img(pic, "input"), _img(way, "direction")]
    row = "".join(f"<td>{c}</td>" for c in cells)
    return f'<tr class="miss">{row}</tr>' if bad else f"<tr>{row}</tr>"


def has_first_order(audit):
    """Whether any row carries a first-order distance (rows of exact estimators)."""
    return any(isinstance(r, dict) and r.get("first_order_distance") is not None for r in audit.rows)


def certificate(audit):
    """What the radius column holds: ``"global"`` (margin / (√2 L)), ``"local"`` (the larger of
    that and the local CROWN radius) or None (no column: no graph bound, or ``certify=None``)."""
    bound = audit.summary.get("bound")
    if not (isinstance(bound, dict) and bound.get("available") is True):
        return None
    if "radius" not in audit.summary:  # saved before audits chose a certificate: the global one
        return "global"
    radius = audit.summary["radius"]
    if not isinstance(radius, dict):
        return None
    return "local" if radius.get("certificate") == "local" else "global"


def has_radius(audit):
    return certificate(audit) is not None


def table(audit):
    """The table of inputs and a sentence on what it shows (rule in the module docstring)."""
    rows = ranked([r for r in audit.rows if isinstance(r, dict)])
    radius, first = has_radius(audit), has_first_order(audit)
    image_like = len(tuple(audit.input_shape)) in (2, 3)
    pics, drawn = _thumbnails(audit) if image_like else ({}, 0)
    heads = ["rank", "index", "label", "prediction", "confidence", "margin", "λ_max", "[lower, upper]"]
    heads += ["d₁", "d₁ class"] if first else []
    heads += ["certified radius"] if radius else []
    heads += ["queries", "status"] + (["input", "top direction"] if image_like else [])
    head = "".join(f"<th>{h}</th>" for h in heads)
    body = "".join(_cells(r, i + 1, radius, pics if image_like else None, first) for i, r in enumerate(rows[:MAX_ROWS]))
    wrong = sum(misclassified(r) for r in rows)
    notes = [f"{len(rows)} inputs, sorted by λ_max (largest first); {wrong} misclassified, marked ✗."]
    if len(rows) > MAX_ROWS:
        notes.append(f"The first {MAX_ROWS} are shown; results.csv holds them all.")
    if image_like:
        notes.append(f"Thumbnails drawn for {drawn} of {len(rows)} inputs (the inputs stored in results.json).")
    return f'<p class="table-note">{" ".join(notes)}</p><table class="inputs"><tr>{head}</tr>{body}</table>'
