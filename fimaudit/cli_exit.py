"""The exit status of ``fimaudit``: the codes, what each means (``fimaudit audit --help``
lists them), and the verdict on an audit's rows. Imports nothing heavy."""

from __future__ import annotations

import enum
import math
import sys

__all__ = ["ExitCode", "MEANING", "EXIT_CODES_HELP", "verdict"]


class ExitCode(enum.IntEnum):
    OK = 0
    USAGE = 2
    GATE_EXCEEDED = 3
    INCOMPLETE = 4
    INTERRUPTED = 130


MEANING = {
    ExitCode.OK: "every input audited and the --fail-above gate (if given) passed",
    ExitCode.USAGE: "usage error: a bad argument, or a file that cannot be read or written",
    ExitCode.GATE_EXCEEDED: "some input's λ_max, or the upper end of its interval, is above --fail-above (wins over 4: "
    "the gate has failed either way)",
    ExitCode.INCOMPLETE: "audit incomplete: some input has no result (an error, no convergence), missed --tol, or none "
    "was audited",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); with --journal the same command resumes",
}
EXIT_CODES_HELP = "exit status:\n" + "\n".join(f"  {int(c):>3}  {text}" for c, text in MEANING.items())


def verdict(rows, fail_above):
    """The exit code of an audit's rows (see :class:`ExitCode`), with the reason on stderr. The
    gate fails closed: it passes an input only when the upper end of its interval (λ_max itself
    for the exact methods) is at most ``fail_above``; an input that missed its ``tol`` counts as
    having no result."""

    def number(v, finite=True):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
        return ok and (math.isfinite(v) or not finite)

    measured = [r for r in rows if r.get("status") == "ok" and number(r.get("lambda_max"))]
    missing = [r for r in rows if r.get("status") != "ok" or not number(r.get("lambda_max"))]
    imprecise = [r for r in measured if r.get("tol_met") is False]
    code = ExitCode.OK
    if fail_above is not None:
        over = [r["index"] for r in rows if number(r.get("lambda_max")) and r["lambda_max"] > fail_above]
        unsure = [
            r["index"]
            for r in measured
            if r["lambda_max"] <= fail_above and number(r.get("upper"), finite=False) and r["upper"] > fail_above
        ]
        if over:
            print(f"fimaudit: {len(over)} inputs have λ_max above {fail_above} (first: {over[:10]})", file=sys.stderr)
        if unsure:
            print(
                f"fimaudit: {len(unsure)} inputs have λ_max below {fail_above} but their interval reaches above it "
                f"(first: {unsure[:10]}); the gate fails closed: narrow the intervals with --tol or --budget",
                file=sys.stderr,
            )
        if over or unsure:
            code = ExitCode.GATE_EXCEEDED
    if missing or not rows:
        why = f" (first: input {missing[0].get('index')}, {missing[0].get('status')})" if missing else ""
        print(
            f"fimaudit: audit incomplete: {len(missing)} of {len(rows)} inputs have no result{why}; "
            "the report lists each input's status, and a rerun with the same --journal measures only those",
            file=sys.stderr,
        )
    if imprecise:
        print(
            f"fimaudit: audit incomplete: {len(imprecise)} of {len(rows)} inputs missed --tol (first: "
            f"{[r.get('index') for r in imprecise[:10]]}); their rows give the precision reached: raise --budget "
            "or loosen --tol",
            file=sys.stderr,
        )
    if (missing or imprecise or not rows) and code == ExitCode.OK:
        code = ExitCode.INCOMPLETE
    return code
