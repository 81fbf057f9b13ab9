"""The ``fimaudit`` command."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fimaudit", description="Audit model robustness via the input-space Fisher information.")
    ap.add_argument("--version", action="version", version=f"fimaudit {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="audit the shipped digits model offline and write a report")
    demo.add_argument("--out", default="fimaudit-report", help="output folder (default: ./fimaudit-report)")
    args = ap.parse_args(argv)
    if args.command == "demo":
        from .demo import run

        try:
            run(args.out)
        except OSError as err:
            print(f"fimaudit: cannot write the report to {args.out!r}: {err.strerror}; pass --out DIR", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
