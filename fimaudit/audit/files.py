"""An audit's folder: results.json (versioned), results.csv and report.html.

Every file is written atomically — to a temporary file in the same folder, flushed and
fsynced, then ``os.replace``-d over the old one — and all three are rendered before the
first is written, so a save that fails (a ``fimaudit report`` on a damaged results.json
included) leaves the files already there whole. :func:`load` refuses a results.json that
is not JSON, or not an audit of the expected schema, with an error naming the file.

results.json is strict JSON (RFC 8259, which has no infinities or NaN): a non-finite number
is written as the string ``"inf"``, ``"-inf"`` or ``"nan"`` and read back as that float, so
any JSON parser reads the file and a saved audit loads back equal to itself.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import stat
import tempfile

from ..errors import InvalidArgumentError

COLUMNS = [
    "index",
    "label",
    "prediction",
    "confidence",
    "margin",
    "lambda_max",
    "lower",
    "upper",
    "trace",
    "first_order_distance",
    "first_order_class",
    "queries",
    "seconds",
    "status",
    "certified_radius",
    "radius_from",  # "global" or "local": the certificate that gave certified_radius
    "tol_met",  # these three: black-box sketches audited with tol only
    "halfwidth",
    "probes",
]


def _new_file_mode():
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path, text):
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = os.fspath(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = _new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(v):
    """A text cell a spreadsheet would run as a formula starts with ``'`` instead (OWASP, CSV injection)."""
    return "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v


def _csv(rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows({k: _cell(r.get(k)) for k in COLUMNS} for r in rows)
    return buf.getvalue()


NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _strict(v):
    """``v`` with every non-finite float replaced by its name in :data:`NON_FINITE`."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _strict(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_strict(x) for x in v]
    return v


def _numbers(v):
    """The inverse of :func:`_strict`: the names of non-finite floats become floats again."""
    if isinstance(v, str):
        return NON_FINITE.get(v, v)
    if isinstance(v, dict):
        return {k: _numbers(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_numbers(x) for x in v]
    return v


def to_json(data):
    """``data`` as strict JSON text (non-finite floats named, see the module docstring)."""
    return json.dumps(_strict(data), allow_nan=False, default=_default)


def _default(v):
    """numpy scalars and arrays (an adapter's numbers) as plain JSON numbers and lists."""
    tolist = getattr(v, "tolist", None)
    if tolist is None:
        raise TypeError(f"{type(v).__name__} is not JSON serialisable")
    return _strict(tolist())


def save(audit, out):
    """Write results.json, results.csv and report.html into the folder ``out``; the page's path."""
    from .report import render

    out = os.fspath(out)
    texts = {
        "results.json": to_json(audit.to_dict()),
        "results.csv": _csv(audit.rows),
        "report.html": render(audit),
    }
    try:
        os.makedirs(out, exist_ok=True)
        for name, text in texts.items():
            write_atomic(os.path.join(out, name), text)
    except OSError as err:
        raise InvalidArgumentError(
            f"cannot write the report to {out!r}: {err.strerror or err}; pick another folder"
        ) from None
    return os.path.join(out, "report.html")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def load(folder, schema):
    """The fields of the audit in ``folder``/results.json (rows, summary, settings, top, input_shape,
    provenance, warnings)."""
    path = os.path.join(os.fspath(folder), "results.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = _numbers(json.load(f))
    except OSError as err:
        raise InvalidArgumentError(
            f"cannot read {path!r}: {err.strerror or err}; pass the --out folder of a finished audit"
        ) from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidArgumentError(
            f"{path!r} is not valid JSON ({err}); the file is damaged or truncated: run the audit again to rewrite it"
        ) from None
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"{path!r} is not an audit results file (a JSON object is expected)")
    if data.get("schema") != schema:
        raise InvalidArgumentError(f"{path!r} has schema {data.get('schema')!r}, expected {schema!r}")
    kinds = dict(rows=list, summary=dict, settings=dict, top=list, input_shape=list)
    for key, kind in kinds.items():
        if not isinstance(data.get(key), kind):
            raise InvalidArgumentError(
                f"{path!r} is damaged: {key!r} is missing or not a JSON {'array' if kind is list else 'object'}; "
                "run the audit again to rewrite it"
            )
    for key in ("rows", "top"):
        if not all(isinstance(r, dict) for r in data[key]):
            raise InvalidArgumentError(f"{path!r} is damaged: every entry of {key!r} must be a JSON object")
    if not all(_is_int(s) and s >= 0 for s in data["input_shape"]):
        raise InvalidArgumentError(f"{path!r} is damaged: 'input_shape' must list non-negative integers")
    optional = dict(provenance=dict, warnings=list)  # absent from files written before they were recorded
    for key, kind in optional.items():
        if not isinstance(data.setdefault(key, kind()), kind):
            raise InvalidArgumentError(
                f"{path!r} is damaged: {key!r} is not a JSON {'array' if kind is list else 'object'}; "
                "run the audit again to rewrite it"
            )
    return {key: data[key] for key in (*kinds, *optional)}
