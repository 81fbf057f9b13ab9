"""What ``fimaudit audit`` shows besides its files: the progress bar's setting, the warnings
the audit raised, its closing line, and what it says when interrupted.

Warnings are held while the command works (none breaks the bar, none is printed as a Python
``file:line: Category`` record) and printed once each when it ends, after the bar, as
``fimaudit: warning: ...`` lines on standard error with how often they came: the summary,
which ``--quiet`` keeps. Their hints name the command's flags (:mod:`fimaudit.hints`,
entered here). Like :mod:`fimaudit.cli`, this module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

from .hints import for_command_line

__all__ = ["progress_of", "reported_warnings", "closing_line", "interrupted"]

_ABOUT_CODE = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def progress_of(args):
    """The audit's ``progress=``: ``--progress``/``--no-progress`` if given, else off with
    ``--quiet``, else automatic (a bar when standard error is a terminal)."""
    if args.progress is not None:
        return args.progress
    return False if args.quiet else None


@contextlib.contextmanager
def reported_warnings(stream=None):
    """Hints spelled as flags inside; the warnings raised inside, printed once each at the end
    (also when the work fails or is interrupted)."""
    with for_command_line(), warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            _print(records, sys.stderr if stream is None else stream)


def _print(records, stream):
    from .audit.provenance import collect_warnings

    shown = [(w, n) for w, n in collect_warnings(records) if not issubclass(w.category, _ABOUT_CODE)]
    for w, n in shown:
        times = f" ({n} times)" if n > 1 else ""
        print(f"fimaudit: warning{times}: {w.message}", file=stream)


def closing_line(summary, path):
    """The one line that ends a successful audit (not with --quiet or --json)."""
    q, d1 = summary.get("lambda_max_quantiles", {}), summary.get("first_order_distance_median")
    d1 = "" if d1 is None else f"; median d₁ {d1:.4g} (first-order ℓ2 distance to a decision boundary, an estimate)"
    return (
        f"audited {summary['completed']}/{summary['inputs']} inputs; "
        f"median λ_max {q.get('median', float('nan')):.4g} (worst-case local KL per unit ‖δ‖², a sensitivity), "
        f"max {q.get('max', float('nan')):.4g}{d1}{_radius(summary)}; report: {path}"
    )


def _radius(summary):
    """Which certificate the rows' certified_radius holds, if any."""
    r = summary.get("radius")
    if not isinstance(r, dict):
        return ""
    if r.get("certificate") != "local":
        return "; certified radius: margin / (√2 L), global graph bound"
    failed = f", {r['failed']} failed" if r.get("failed") else ""
    return f"; certified radius: local CROWN, larger than margin / (√2 L) for {r.get('local_rows')} inputs{failed}"


def interrupted(args):
    """What the command says when Ctrl-C stops it."""
    if getattr(args, "command", None) != "audit":
        return "fimaudit: interrupted"
    if args.journal:
        return f"fimaudit: interrupted; finished inputs are kept in {args.journal}: run the same command to resume"
    return "fimaudit: interrupted; nothing was kept: pass --journal FILE to make the audit resumable"


def precision_line(p):
    """The line that says how precise a ``--tol`` audit's black-box intervals came out."""
    if not p.get("rows"):
        return f"--tol {p['tol']}: no input was estimated by a black-box sketch (exact or white-box rows need none)"
    line = (
        f"precision: {p['met']}/{p['rows']} inputs within ±{p['tol']} (95% interval's relative half-width: median "
        f"{p['halfwidth_median']:.3g}, max {p['halfwidth_max']:.3g}; probes median {p['probes_median']:.0f}, "
        f"max {p['probes_max']})"
    )
    if p["missed"]:
        line += (
            f"; missed tol: inputs {p['missed_first']} (a larger --budget or a looser --tol; where the "
            "finite-difference error alone is wider than tol, as the warning says, only a looser --tol)"
        )
    return line
