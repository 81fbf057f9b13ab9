"""results.json is strict JSON: any parser reads it, and a saved audit loads back equal to itself."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.audit.files import to_json

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**40), 2**40),
    st.none(),
    st.sampled_from(["ok", "label", "inf-like", "∞"]),
)
ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "index": st.integers(0, 10**6),
            "lambda_max": NUMBERS,
            "certified_radius": NUMBERS,
            "upper": NUMBERS,
            "status": st.sampled_from(["ok", "noise", "failed"]),
        }
    ),
    max_size=8,
)


def _strict_loads(text):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name} in results.json")

    return json.loads(text, parse_constant=refuse)


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(rows=ROWS, bound=NUMBERS, top=st.lists(st.lists(NUMBERS, max_size=4), max_size=3))
def test_saved_audit_is_strict_json_and_round_trips(tmp_path_factory, rows, bound, top):
    audit = fa.Audit(
        rows=rows,
        summary={"median_lambda_max": bound, "bound": {"lipschitz": bound}},
        settings={"budget": None},
        top=[{"index": i, "input": t} for i, t in enumerate(top)],
        input_shape=(4,),
    )
    out = tmp_path_factory.mktemp("audit")
    audit.save(out)
    text = (out / "results.json").read_text(encoding="utf-8")
    _strict_loads(text)  # no Infinity / NaN tokens
    back = fa.Audit.load(out)
    for field in ("rows", "summary", "settings", "top"):
        assert _same(getattr(back, field), getattr(audit, field)), field


def test_numpy_numbers_are_plain_json():
    import numpy as np

    text = to_json({"a": np.float32(np.inf), "b": np.arange(3), "c": np.float64(-np.inf), "d": np.int64(7)})
    assert _strict_loads(text) == {"a": "inf", "b": [0, 1, 2], "c": "-inf", "d": 7}
