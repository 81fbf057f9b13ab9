"""The one-line progress display of an audit on a terminal."""

from __future__ import annotations


def progress_line(done, total, first, elapsed, width=30):
    """A one-line progress bar with the rate and the time left."""
    fill = int(width * done / max(total, 1))
    rate = (done - first) / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else float("nan")
    eta = f"{left:5.0f}s left" if left == left else "   ?  left"
    return f"fimaudit [{'#' * fill}{'.' * (width - fill)}] {done}/{total} inputs, {rate:6.1f}/s, {eta}"
