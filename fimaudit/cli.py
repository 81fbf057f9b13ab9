"""The ``fimaudit`` command: ``demo``, ``audit`` and ``report``."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import FimauditError, InvalidArgumentError


def _audit(args):
    import numpy as np

    from .audit import audit
    from .models import wrap

    X = np.load(args.data)
    y = np.load(args.labels) if args.labels else None
    options = {}
    if args.probs:
        options["output"] = "probs"
    if args.kinks:
        options["kinks"] = args.kinks
    model = wrap(args.model, **options)
    a = audit(
        model,
        X,
        y,
        method=args.method,
        budget=args.budget,
        journal=args.journal,
        progress=not args.quiet,
        batch_size=args.batch_size,
    )
    path = a.save(args.out)
    if args.json:
        print(json.dumps(a.summary))
    elif not args.quiet:
        q = a.summary.get("lambda_max_quantiles", {})
        print(
            f"audited {a.summary['completed']}/{a.summary['inputs']} inputs; "
            f"median λ_max {q.get('median', float('nan')):.4g}, "
            f"max {q.get('max', float('nan')):.4g}; report: {path}"
        )
    if args.fail_above is not None:
        over = [r["index"] for r in a.rows if r["lambda_max"] is not None and r["lambda_max"] > args.fail_above]
        if over:
            print(
                f"fimaudit: {len(over)} inputs have λ_max above {args.fail_above} (first: {over[:10]})", file=sys.stderr
            )
            return 3
    return 0


def _bound(args):
    from .bounds import lipschitz_bound

    shape = tuple(int(s) for s in args.input_shape.split(",")) if args.input_shape else None
    domain = None
    if args.input_domain:
        try:
            domain = tuple(float(v) for v in args.input_domain.split(","))
        except ValueError:
            domain = ()
        if len(domain) != 2:
            raise InvalidArgumentError(f"--input-domain takes LOW,HIGH (two numbers), got {args.input_domain!r}")
    b = lipschitz_bound(args.model, input_shape=shape, input_domain=domain)
    if args.json:
        print(json.dumps(dict(lipschitz=b.lipschitz, fisher_bound=b.fisher_bound, layers=b.layers)))
        return 0
    print(f"{'node':32s} {'op':20s} {'local':>10s} {'cumulative':>12s}")
    for layer in b.layers:
        local = "" if layer["local"] is None else f"{layer['local']:.4g}"
        print(f"{layer['node'][:32]:32s} {layer['op']:20s} {local:>10s} {layer['cumulative']:12.4g}")
    note = " (logits before the final Softmax)" if b.softmax_skipped else ""
    print(f"certified logit Lipschitz constant L ≤ {b.lipschitz:.6g}{note}")
    where = "every x" if domain is None else f"every x in [{domain[0]:g}, {domain[1]:g}]^d"
    print(f"λ_max(F(x)) ≤ ½ L² = {b.fisher_bound:.6g} for {where}; top-1 class fixed within margin / (√2 L)")
    return 0


def _report(args):
    from .audit import Audit

    print(Audit.load(args.folder).save(args.folder))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="fimaudit", description="Audit model robustness via the input-space Fisher information."
    )
    ap.add_argument("--version", action="version", version=f"fimaudit {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="audit the shipped digits model offline and write a report")
    demo.add_argument("--out", default="fimaudit-report", help="output folder (default: ./fimaudit-report)")
    au = sub.add_parser("audit", help="audit a model (an .onnx file, or a URL with fimaudit-http) on X.npy")
    au.add_argument("model")
    au.add_argument("--data", required=True, help="inputs, a .npy array of shape (n, *input_shape)")
    au.add_argument("--labels", help="labels, a .npy array of shape (n,)")
    au.add_argument("--out", required=True, help="output folder for results.json, results.csv, report.html")
    au.add_argument("--method", default="auto")
    au.add_argument("--budget", type=int, help="model calls per input (black-box models)")
    au.add_argument("--journal", help="SQLite journal: resume an interrupted audit")
    au.add_argument("--batch-size", type=int, default=64)
    au.add_argument("--probs", action="store_true", help="the model outputs probabilities")
    au.add_argument(
        "--kinks",
        choices=["repair", "extrapolate", "ignore"],
        help="finite differences across ReLU/max-pool kinks (black-box models): 'repair' (default) "
        "re-measures probes that straddle one; 'extrapolate' measures every column at steps h "
        "and 2h and extrapolates to 0 (twice the calls; for CNNs with kinks everywhere)",
    )
    au.add_argument("--fail-above", type=float, help="exit with status 3 if any λ_max exceeds this")
    au.add_argument("--json", action="store_true", help="print the summary as JSON")
    au.add_argument("--quiet", action="store_true")
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
    args = ap.parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run

            run(args.out)
            return 0
        if args.command == "audit":
            return _audit(args)
        if args.command == "bound":
            return _bound(args)
        return _report(args)
    except (FimauditError, OSError) as err:
        print(f"fimaudit: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
