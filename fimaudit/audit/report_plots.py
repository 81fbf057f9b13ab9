"""The report's plots as inline SVG: a histogram of λ_max and λ_max against confidence.

Axes are fitted to the data. A λ_max axis is logarithmic when the positive values span a
factor of 10 or more (inputs with λ_max ≤ 0 are then left off and counted); otherwise it is
linear. Linear ticks are the "nice numbers" of Heckbert (Graphics Gems, 1990): a step of
1, 2, 5 or 10 × 10^k, about five ticks (the next smaller step when that leaves fewer than
two), each inside the data range. Logarithmic ticks are
the powers of ten inside the range (every k-th when there are more than seven), with 2×
and 5× added when there are fewer than three.
Every tick label is the tick's value as text (``<text class="tick x">``), so it can be read
back. Misclassified inputs are red squares, the others blue circles.
"""

from __future__ import annotations

import html
import math

import numpy as np

W, H = 460, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44


def nice_ticks(lo, hi, n=5):
    """Ticks k·step inside [lo, hi] with step 1, 2, 5 or 10 × 10^j, about ``n`` of them, and their labels."""
    span = hi - lo
    if not span > 0:
        return [lo], [format(lo, ".6g")]
    raw = span / n
    mag = 10.0 ** math.floor(math.log10(raw))
    steps = [m * mag for m in (0.1, 0.2, 0.5, 1, 2, 5, 10)]  # one of them lies in [span/5, span/2]
    nice = next(i for i, step in enumerate(steps) if step >= raw)
    for step in steps[nice::-1]:  # the smallest nice step ≥ span/n, smaller ones until two ticks fit
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
        if last > first:
            break
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)))
    ticks = [round(k * step, decimals + 1) for k in range(first, last + 1)]
    return ticks, [f"{t:.{decimals}f}" for t in ticks]


def log_ticks(lo, hi):
    """Powers of ten inside [lo, hi] (0 < 10·lo ≤ hi), at most seven, with 2× and 5× when fewer than three."""
    ks = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 2)
    ticks = [10.0**k for k in ks if lo <= 10.0**k <= hi]
    if len(ticks) > 7:  # every 2nd, 3rd, … decade
        ticks = ticks[:: math.ceil(len(ticks) / 7)]
    elif len(ticks) < 3:
        ticks = sorted(m * 10.0**k for k in ks for m in (1, 2, 5) if lo <= m * 10.0**k <= hi)
    return ticks


class Axis:
    """A data range [lo, hi] mapped onto pixels [p0, p1], linear or log10, with its ticks."""

    def __init__(self, values, p0, p1, log=False, integer=False):
        v = np.asarray(values, dtype=np.float64)
        self.log = log
        self.lo, self.hi = float(v.min()), float(v.max())
        self.p0, self.p1 = p0, p1
        if log:
            self.ticks = log_ticks(self.lo, self.hi)
            self.labels = [format(t, ".3g") for t in self.ticks]
        else:
            self.ticks, self.labels = nice_ticks(self.lo, self.hi)
        if integer:
            self.ticks = sorted({int(round(t)) for t in self.ticks if abs(t - round(t)) < 1e-9})
            self.labels = [str(t) for t in self.ticks]
        a, b = self._t(self.lo), self._t(self.hi)
        pad = (b - a) * 0.03 if b > a else (abs(a) * 0.05 or 0.5)
        self.a, self.b = a - pad, b + pad

    def _t(self, v):
        return math.log10(v) if self.log else float(v)

    def __call__(self, v):
        return self.p0 + (self._t(v) - self.a) / (self.b - self.a) * (self.p1 - self.p0)


def _frame(x, y, xlabel, ylabel, note):
    """Axes lines, ticks with their labels, axis titles and the note (counts) at the top."""
    out = [
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#444"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="#444"/>',
    ]
    for t, label in zip(x.ticks, x.labels):
        px = x(t)
        out.append(f'<line x1="{px:.1f}" y1="{H - BOTTOM}" x2="{px:.1f}" y2="{H - BOTTOM + 5}" stroke="#444"/>')
        out.append(f'<text class="tick x" x="{px:.1f}" y="{H - BOTTOM + 17}" text-anchor="middle">{label}</text>')
    for t, label in zip(y.ticks, y.labels):
        py = y(t)
        out.append(f'<line x1="{LEFT - 5}" y1="{py:.1f}" x2="{LEFT}" y2="{py:.1f}" stroke="#444"/>')
        out.append(f'<text class="tick y" x="{LEFT - 7}" y="{py + 4:.1f}" text-anchor="end">{label}</text>')
    cx, cy = (LEFT + W - RIGHT) / 2, (TOP + H - BOTTOM) / 2
    out.append(f'<text class="axis-label" x="{cx:.0f}" y="{H - 6}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(
        f'<text class="axis-label" x="14" y="{cy:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {cy:.0f})">{html.escape(ylabel)}</text>'
    )
    out.append(f'<text class="count" x="{LEFT}" y="16">{html.escape(note)}</text>')
    return "".join(out)


def _svg(kind, body):
    return (
        f'<svg class="plot {kind}" width="{W}" height="{H}" font-size="11" role="img" aria-label="{kind}">{body}</svg>'
    )


def lambda_scale(lams):
    """(values plotted, log axis?, how many left off) for the λ_max values ``lams``."""
    v = np.asarray(lams, dtype=np.float64)
    pos = v[v > 0]
    if len(pos) and pos.max() >= 10 * pos.min():
        return pos, True, int(len(v) - len(pos))
    return v, False, 0


def _lambda_label(log, left_off):
    note = f"; {left_off} with λ_max ≤ 0 not shown" if left_off else ""
    return ("λ_max (log scale)" if log else "λ_max"), note


def histogram(lams, bins=30):
    """The distribution of λ_max: counts of inputs per bin (equal widths on the axis's scale)."""
    v, log, left_off = lambda_scale(lams)
    if len(v) == 0:
        return "<p>No λ_max to plot.</p>"
    t = np.log10(v) if log else v
    if t.max() > t.min():
        counts, edges = np.histogram(t, bins=bins)
    else:  # one value: one bar
        counts, edges = np.array([len(t)]), np.array([t[0], t[0]])
    x = Axis(v, LEFT, W - RIGHT, log=log)
    y = Axis([0, max(int(counts.max()), 1)], H - BOTTOM, TOP, integer=True)
    y.a = 0.0  # bars stand on the axis
    bars = []
    for c, e0, e1 in zip(counts, edges[:-1], edges[1:]):
        lo, hi = (10.0**e0, 10.0**e1) if log else (float(e0), float(e1))
        x0, x1 = (x(lo), x(hi)) if hi > lo else (x(lo) - 4, x(lo) + 4)
        top = y(c)
        bars.append(
            f'<rect x="{x0:.1f}" y="{top:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" height="{H - BOTTOM - top:.1f}" '
            f'fill="#3b6ea8"><title>{int(c)} inputs with λ_max in [{lo:.3g}, {hi:.3g}]</title></rect>'
        )
    xlabel, note = _lambda_label(log, left_off)
    return _svg("histogram", "".join(bars) + _frame(x, y, xlabel, "inputs", f"{len(v)} inputs{note}"))


def scatter(lams, confs, wrong):
    """λ_max (x) against confidence (y), one mark per input; ``wrong[i]``: input i is misclassified."""
    lams, confs, wrong = (np.asarray(a) for a in (lams, confs, wrong))
    v, log, left_off = lambda_scale(lams)
    keep = lams > 0 if log else np.ones(len(lams), bool)
    lams, confs, wrong = lams[keep], confs[keep].astype(np.float64), wrong[keep].astype(bool)
    if len(lams) == 0:
        return "<p>No inputs to plot.</p>"
    x = Axis(lams, LEFT, W - RIGHT, log=log)
    y = Axis(confs, H - BOTTOM, TOP)
    marks = []
    for lam, c, bad in zip(lams, confs, wrong):
        px, py = x(lam), y(c)
        if bad:
            marks.append(f'<rect x="{px - 3:.1f}" y="{py - 3:.1f}" width="6" height="6" fill="#c0392b"/>')
        else:
            marks.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="#3b6ea8" fill-opacity="0.6"/>')
    xlabel, note = _lambda_label(log, left_off)
    counts = f"{len(lams)} inputs, {int(wrong.sum())} misclassified (red squares){note}"
    return _svg("scatter", "".join(marks) + _frame(x, y, xlabel, "confidence", counts))
