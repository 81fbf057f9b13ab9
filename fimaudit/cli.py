"""The ``fimaudit`` command: ``demo``, ``audit``, ``bound`` and ``report``.

The command fails closed: it exits 0 only when every input was audited and the ``--fail-above``
gate, if given, passed; the other outcomes have the distinct codes of :class:`ExitCode` (listed
by ``fimaudit audit --help``). Every argument of ``audit`` is checked before the model is
loaded. Importing this module loads neither numpy nor any framework: ``--help`` is immediate.
"""

from __future__ import annotations

import argparse
import math
import sys

from . import __version__
from .cli_exit import EXIT_CODES_HELP, MEANING, ExitCode  # noqa: F401  (MEANING: part of this module's face)
from .cli_exit import verdict as _verdict
from .cli_options import URL_EXAMPLE, add_model_options, input_domain, model_options
from .cli_summary import closing_line, interrupted, precision_line, progress_of, reported_warnings
from .errors import FimauditError, InvalidArgumentError
from .hints import for_command_line

METHODS = ("auto", "exact", "lanczos", "power", "sketch")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _finite_float(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _audit(args):
    from .audit.inputs import check_journal, check_model_source, load_inputs, load_labels, writable_folder

    options = model_options(args)  # before any file is read or request made
    if args.tol is not None and not 0 < args.tol < 1:
        raise InvalidArgumentError(f"--tol {args.tol}: a relative half-width, pass 0 < TOL < 1 (e.g. --tol 0.05)")
    domain = input_domain(args.input_domain)
    X = load_inputs(args.data)
    y = None if args.labels is None else load_labels(args.labels, len(X))
    shape = options.get("input_shape")
    if shape is not None and tuple(X.shape[1:]) != shape:
        raise InvalidArgumentError(f"--data holds inputs of shape {tuple(X.shape[1:])}, but --input-shape is {shape}")
    writable_folder(args.out)
    if args.journal:
        check_journal(args.journal)
    check_model_source(args.model)

    from .audit import audit
    from .audit.radius import OPTIONS
    from .plugins import wrap

    if args.kinks:
        options["kinks"] = args.kinks
    with reported_warnings():  # printed once each after the bar, their hints naming flags
        model = wrap(args.model, **options)
        a = audit(
            model,
            X,
            y,
            method=args.method,
            budget=args.budget,
            tol=args.tol,
            journal=args.journal,
            progress=progress_of(args),
            batch_size=args.batch_size,
            input_domain=domain,
            certify=None if args.certify == "none" else args.certify,
            certify_options={k: v for k in OPTIONS if (v := getattr(args, f"certify_{k}")) is not None} or None,
        )
    path = a.save(args.out)
    if args.json:
        from .audit.files import to_json

        print(to_json(a.summary))
    elif not args.quiet:
        print(closing_line(a.summary, path))
        if a.summary.get("precision"):
            print(precision_line(a.summary["precision"]))
    return _verdict(a.rows, args.fail_above)


def _bound(args):
    from .bounds import lipschitz_bound
    from .cli_options import input_domain, input_shape

    shape = input_shape(args.input_shape) if args.input_shape else None
    domain = input_domain(args.input_domain)
    b = lipschitz_bound(args.model, input_shape=shape, input_domain=domain)
    if args.json:
        from .audit.files import to_json

        print(to_json(dict(lipschitz=b.lipschitz, fisher_bound=b.fisher_bound, layers=b.layers)))
        return ExitCode.OK
    print(f"{'node':32s} {'op':20s} {'local':>10s} {'cumulative':>12s}")
    for layer in b.layers:
        local = "" if layer["local"] is None else f"{layer['local']:.4g}"
        print(f"{layer['node'][:32]:32s} {layer['op']:20s} {local:>10s} {layer['cumulative']:12.4g}")
    note = " (logits before the final Softmax)" if b.softmax_skipped else ""
    print(f"certified logit Lipschitz constant L ≤ {b.lipschitz:.6g}{note}")
    where = "every x" if domain is None else f"every x in [{domain[0]:g}, {domain[1]:g}]^d"
    print(f"λ_max(F(x)) ≤ ½ L² = {b.fisher_bound:.6g} for {where}; top-1 class fixed within margin / (√2 L)")
    return ExitCode.OK


def _report(args):
    from .audit import Audit

    print(Audit.load(args.folder).save(args.folder))
    return ExitCode.OK


def _parser():
    ap = argparse.ArgumentParser(
        prog="fimaudit",
        description="Audit model robustness via the input-space Fisher information.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"fimaudit {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="audit the shipped digits model offline and write a report")
    demo.add_argument("--out", default="fimaudit-report", help="output folder (default: ./fimaudit-report)")
    au = sub.add_parser(
        "audit",
        help="audit a model (an .onnx file, or a URL with fimaudit-http) on X.npy",
        description=URL_EXAMPLE,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    au.add_argument("model")
    au.add_argument("--data", required=True, help="inputs, a .npy float array of shape (n, *input_shape), n >= 1")
    au.add_argument("--labels", help="labels, a .npy array of n integer class indices")
    au.add_argument("--out", required=True, help="output folder for results.json, results.csv, report.html")
    au.add_argument("--method", default="auto", choices=METHODS)
    au.add_argument("--budget", type=_positive_int, help="model calls per input (black-box models), >= 1")
    au.add_argument(
        "--tol",
        type=_finite_float,
        help="black-box sketches: probes in rounds until each input's 95%% interval is within ±TOL of its "
        "midpoint (0 < TOL < 1, e.g. 0.05), or --budget runs out",
    )
    au.add_argument("--journal", help="SQLite journal: resume an interrupted audit")
    au.add_argument("--batch-size", type=_positive_int, default=64, help="inputs per chunk (default 64)")
    au.add_argument("--probs", action="store_true", help="the model outputs probabilities (same as --output probs)")
    au.add_argument(
        "--kinks",
        choices=["repair", "extrapolate", "ignore"],
        help="finite differences across ReLU/max-pool kinks (black-box models): 'repair' (default) "
        "re-measures probes that straddle one; 'extrapolate' measures every column at steps h "
        "and 2h and extrapolates to 0 (twice the calls; for CNNs with kinks everywhere)",
    )
    au.add_argument(
        "--certify",
        choices=["global", "local", "none"],
        default="global",
        help="each input's certified radius (models with an ONNX graph): 'global' (default) margin / (√2 L); "
        "'local' also the local CROWN radius, seconds per input, kept in --journal; 'none': no radius",
    )
    for name, what in (
        ("alpha", "ascent steps on the ReLU lower slopes (default 20; 0: CROWN's own)"),
        ("branches", "subdomains of branch and bound for a refused ball, ReLU networks (default 0: off)"),
        ("iterations", "log-bisection steps on the radius (default 12)"),
    ):
        au.add_argument(f"--certify-{name}", type=int, metavar="N", help=f"with --certify local: {what}")
    au.add_argument("--fail-above", type=_finite_float, help="exit with status 3 if any λ_max exceeds this")
    au.add_argument("--json", action="store_true", help="print the summary as JSON")
    au.add_argument("--quiet", action="store_true", help="no progress bar, no closing line: only the warnings' summary")
    au.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force the progress bar on or off (default: on when standard error is a terminal, off with --quiet)",
    )
    add_model_options(au, _positive_int, _finite_float)
    bd = sub.add_parser("bound", help="certified Lipschitz and Fisher bounds from an ONNX graph")
    bd.add_argument("model")
    bd.add_argument("--input-shape", help="one input's shape, e.g. 3,32,32 (when the graph leaves it symbolic)")
    bd.add_argument(
        "--input-domain",
        help="LOW,HIGH: the inputs' range, needed for LayerNorm/attention "
        "(bounds then hold on that box), e.g. 0,1; write --input-domain=-1,1 when LOW is negative",
    )
    bd.add_argument("--json", action="store_true")
    rep = sub.add_parser("report", help="re-render report.html from a folder's results.json")
    rep.add_argument("folder")
    return ap


def main(argv=None):
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error (argparse prints it)
        return stop.code if isinstance(stop.code, int) else ExitCode.USAGE
    with for_command_line():  # every message's hints name this command's flags
        return _run(args)


def _run(args):
    try:
        if args.command == "demo":
            from .demo import run

            run(args.out)
            return ExitCode.OK
        if args.command == "audit":
            return _audit(args)
        if args.command == "bound":
            return _bound(args)
        return _report(args)
    except KeyboardInterrupt:
        print(interrupted(args), file=sys.stderr)
        return ExitCode.INTERRUPTED
    except (FimauditError, OSError) as err:
        print(f"fimaudit: {err}", file=sys.stderr)
        return ExitCode.USAGE


if __name__ == "__main__":
    sys.exit(main())
