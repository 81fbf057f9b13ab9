"""MkDocs hook: measured tables come from ``benchmarks/results/`` at build time, never by hand.

A page line ``<!-- results: PATH -->`` (PATH relative to the repository root, optionally followed
by ``lines=A-B``, 1-based and inclusive) is replaced by that file's content: markdown table rows
are kept as tables, other lines become paragraphs, indented lines (stray warnings a benchmark
printed) are dropped. A missing file fails the build, so a table can never silently go stale.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- results: (\S+)(?: lines=(\d+)-(\d+))? -->$", re.M)


def render(path: str, first: int | None = None, last: int | None = None) -> str:
    file = ROOT / path
    if not file.is_file():
        raise FileNotFoundError(f"docs: the results file {path!r} does not exist (run its benchmark)")
    lines = file.read_text(encoding="utf-8").splitlines()
    if first is not None:
        lines = lines[first - 1 : last]
    out, in_table = [], False
    for line in lines:
        if line.startswith(" ") or not line.strip():
            continue
        table = line.startswith("|")
        if out and not (table and in_table):
            out.append("")
        out.append(line)
        in_table = table
    note = f"*Generated from `{path}`.*"
    return "\n".join(out + ["", note])


def on_page_markdown(markdown, page, config, files):
    def expand(m):
        a, b = m.group(2), m.group(3)
        return render(m.group(1), int(a) if a else None, int(b) if b else None)

    return MARKER.sub(expand, markdown)
