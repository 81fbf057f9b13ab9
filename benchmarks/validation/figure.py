"""The study's figure as one self-contained SVG (no plotting library needed)."""

import html

import numpy as np

PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
]
W, H, PAD = 420, 300, 48


def _axis(v, lo, hi, size, flip=False):
    f = (v - lo) / ((hi - lo) or 1.0)
    return PAD + (1 - f if flip else f) * (size - 2 * PAD)


def _frame(ox, oy, title, xlabel, ylabel, xr, yr):
    t = [
        f'<rect x="{ox + PAD}" y="{oy + PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#999"/>',
        f'<text x="{ox + W / 2}" y="{oy + 20}" font-size="13" text-anchor="middle">{html.escape(title)}</text>',
        f'<text x="{ox + W / 2}" y="{oy + H - 8}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>',
        f'<text x="{ox + 12}" y="{oy + H / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 {ox + 12} {oy + H / 2})">{html.escape(ylabel)}</text>',
    ]
    for v, lo, hi, horizontal in ((xr[0], *xr, True), (xr[1], *xr, True), (yr[0], *yr, False), (yr[1], *yr, False)):
        if horizontal:
            t.append(
                f'<text x="{ox + _axis(v, lo, hi, W):.1f}" y="{oy + H - PAD + 14}" font-size="10" '
                f'text-anchor="middle">{v:.3g}</text>'
            )
        else:
            t.append(
                f'<text x="{ox + PAD - 4}" y="{oy + _axis(v, lo, hi, H, True):.1f}" font-size="10" '
                f'text-anchor="end">{v:.3g}</text>'
            )
    return t


def _range(v):
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)


def scatter(ox, oy, groups, title, xlabel, ylabel):
    """groups: list of (label, xs, ys); one colour per group."""
    xr = _range(np.concatenate([g[1] for g in groups]))
    yr = _range(np.concatenate([g[2] for g in groups]))
    out = _frame(ox, oy, title, xlabel, ylabel, xr, yr)
    for i, (label, xs, ys) in enumerate(groups):
        c = PALETTE[i % len(PALETTE)]
        for x, y in zip(xs, ys):
            if np.isfinite(x) and np.isfinite(y):
                out.append(
                    f'<circle cx="{ox + _axis(x, *xr, W):.1f}" cy="{oy + _axis(y, *yr, H, True):.1f}" r="2.2" '
                    f'fill="{c}" fill-opacity="0.55"><title>{html.escape(label)}</title></circle>'
                )
    return out


def bars(ox, oy, rows, title):
    """rows: (label, value, low, high) correlations in [-1, 1], drawn horizontally."""
    out = _frame(ox, oy, title, "Spearman ρ (95% bootstrap CI)", "", (-1.0, 1.0), (0, 1))[:3]
    out.append(
        f'<rect x="{ox + PAD}" y="{oy + PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#999"/>'
    )
    zero = ox + _axis(0.0, -1, 1, W)
    out.append(f'<line x1="{zero:.1f}" y1="{oy + PAD}" x2="{zero:.1f}" y2="{oy + H - PAD}" stroke="#555"/>')
    step = (H - 2 * PAD) / max(len(rows), 1)
    for i, (label, v, lo, hi) in enumerate(rows):
        y = oy + PAD + (i + 0.5) * step
        out.append(f'<text x="{ox + PAD + 3}" y="{y - 5:.1f}" font-size="10">{html.escape(label)}</text>')
        if v is None:
            continue
        out.append(
            f'<line x1="{ox + _axis(lo, -1, 1, W):.1f}" y1="{y + 4:.1f}" x2="{ox + _axis(hi, -1, 1, W):.1f}" '
            f'y2="{y + 4:.1f}" stroke="#333"/>'
        )
        out.append(f'<circle cx="{ox + _axis(v, -1, 1, W):.1f}" cy="{y + 4:.1f}" r="3.5" fill="#1f77b4"/>')
    return out


def write(path, panels, columns=2):
    """panels: callables (ox, oy) → list of SVG elements, laid out in a grid."""
    rows = (len(panels) + columns - 1) // columns
    body = []
    for i, p in enumerate(panels):
        body += p((i % columns) * W, (i // columns) * H)
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{columns * W}" height="{rows * H}" '
            f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>{"".join(body)}</svg>\n'
        )
