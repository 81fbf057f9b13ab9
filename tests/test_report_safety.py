"""report.html from a tampered results.json: every value escaped, a CSP that forbids script,
and no script run in a real browser; results and reports written atomically; a damaged
results.json refused with the file named."""

import copy
import json
import os
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.audit import files, report
from fimaudit.audit.report import render
from fimaudit.cli import main
from fimaudit.errors import InvalidArgumentError
from fimaudit.testing import MLPModel
from tests.browser import CHROMIUM, headless

MODEL = MLPModel.random([6, 8, 3], seed=4)
X = np.random.default_rng(5).standard_normal((12, 6))
Y = np.random.default_rng(6).integers(0, 3, 12)
SMALL = fa.audit(MODEL, X[:4], progress=False)

SCRIPT = "<script>document.title='PWNED'</script>"
HOSTILE = [
    SCRIPT,
    '"><img src=x onerror="document.body.setAttribute(\'data-pwned\', 1)">',
    "'><svg onload=alert(1)>",
    "javascript:alert(1)",
    '</code></p><a href="javascript:alert(2)">x</a>',
    "</title><script>document.title='PWNED'</script>",
]
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "tr", "th", "td", "div",
    "figure", "figcaption", "svg", "rect", "text", "circle", "code", "line", "img", "b",
}  # fmt: skip
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


class Page(HTMLParser):
    """The tags, attributes and text of a page, as a browser's tokenizer sees them."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.text, self.meta = [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        if tag == "meta":
            self.meta.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def _assert_inert(page_text):
    page = Page(page_text)
    assert set(page.tags) <= ALLOWED_TAGS, set(page.tags) - ALLOWED_TAGS
    assert not [a for a, _ in page.attrs if a.lower().startswith("on")]
    assert not [v for _, v in page.attrs if v and "javascript:" in v.lower() and "content" != v]
    assert "<script" not in page_text.lower()
    assert not re.search(r"<[^>]*\sonerror\s*=", page_text, re.I)
    assert not re.search(r"=\s*[\"']?\s*javascript:", page_text, re.I)
    assert {"http-equiv": "Content-Security-Policy", "content": CSP} in page.meta
    return page


def _tamper(data):
    """Hostile strings in every field, numbers replaced by strings."""
    h = iter(HOSTILE * 50)
    for r in data["rows"]:
        for k in ("label", "prediction", "confidence", "margin", "status", "trace", "queries", "lower", "upper"):
            r[k] = next(h)
    data["rows"][0]["lambda_max"] = SCRIPT
    data["rows"][1]["status"] = f"error: InvalidModelOutputError: {SCRIPT}"
    s = data["summary"]
    for k in ("inputs", "completed", "failed", "accuracy", "spearman_lambda_vs_margin"):
        s[k] = next(h)
    s["lambda_max_quantiles"] = {SCRIPT: next(h), "median": next(h)}
    s["lambda_max_mean"] = {"value": next(h), "low": next(h), "high": next(h)}
    s["bound"] = dict(
        available=True,
        lipschitz=next(h),
        fisher_bound=next(h),
        layers=[dict(node=next(h), op=next(h), local=next(h), cumulative=next(h)), "not a layer"],
    )
    data["settings"].update(model=SCRIPT, method=next(h), **{SCRIPT: next(h)})
    for t in data["top"]:
        for k in ("index", "label", "prediction", "confidence", "lambda_max"):
            t[k] = next(h)
        t["input"] = [next(h)] * 6
        t["direction"] = SCRIPT
    data["input_shape"] = [2, 3]  # pictures are drawn: from values that are not numbers
    p = data["provenance"]
    for k in ("fimaudit", "created", "python", "numpy", "platform", "model", "data", "labels"):
        p[k] = next(h)
    p["settings"] = {SCRIPT: next(h), "method": next(h), "budget": [next(h)]}
    p[SCRIPT] = next(h)
    data["warnings"] = [
        dict(category=next(h), message=next(h), count=next(h)),
        dict(category=SCRIPT, message=SCRIPT, count=SCRIPT),
        "not a warning",
    ]
    return data


@pytest.fixture()
def hostile(tmp_path):
    out = tmp_path / "out"
    fa.audit(MODEL, X, Y, progress=False).save(out)
    path = out / "results.json"
    path.write_text(json.dumps(_tamper(json.loads(path.read_text()))))
    return out


def test_every_hostile_value_is_escaped(hostile, capsys):
    assert main(["report", str(hostile)]) == 0
    text = (hostile / "report.html").read_text()
    page = _assert_inert(text)
    shown = "".join(page.text)
    assert SCRIPT in shown  # shown as text, not dropped
    assert "document.title" in shown and "onerror=" in shown


def test_a_bound_that_is_not_available_escapes_its_reason(hostile):
    data = json.loads((hostile / "results.json").read_text())
    data["summary"]["bound"] = dict(available=False, reason=HOSTILE[1])
    (hostile / "results.json").write_text(json.dumps(data))
    assert main(["report", str(hostile)]) == 0
    assert HOSTILE[1] in "".join(_assert_inert((hostile / "report.html").read_text()).text)


@settings(max_examples=30, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40))
def test_any_label_text_is_shown_as_text_and_runs_nothing(label):
    a = copy.deepcopy(SMALL)
    for r in a.rows + a.top:
        r["label"] = label
    a.settings["model"] = label
    a.provenance.update(model=label, settings={label: label})
    a.warnings = [dict(category=label, message=label, count=label)]
    page = _assert_inert(render(a))
    shown = "".join(page.text)
    assert shown.count(label) >= len(a.rows)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_no_script_runs_in_a_browser(hostile, tmp_path):
    assert main(["report", str(hostile)]) == 0
    proc = headless(tmp_path, hostile / "report.html", "--dump-dom")
    dom = proc.stdout
    assert "<h1>fimaudit report</h1>" in dom, proc.stderr[-2000:]
    assert re.search(r"<title>fimaudit report</title>", dom)  # document.title was never set
    assert "PWNED" not in re.sub(r"&lt;script&gt;document\.title='PWNED'&lt;/script&gt;", "", dom)
    assert not re.search(r"<body[^>]*data-pwned", dom)


def test_a_damaged_results_json_leaves_the_report_whole(tmp_path, capsys):
    out = tmp_path / "out"
    fa.audit(MODEL, X, Y, progress=False).save(out)
    before = {name: (out / name).read_bytes() for name in ("report.html", "results.csv")}
    data = (out / "results.json").read_bytes()
    (out / "results.json").write_bytes(data[: len(data) // 2])  # truncated
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out / "results.json") in err and "Traceback" not in err and "not valid JSON" in err
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(out)) == ["report.html", "results.csv", "results.json"]  # no temporary files left


@pytest.mark.parametrize(
    "content,match",
    [
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[1, 2, 3]", "a JSON object"),
        (b'{"schema": "fimaudit.audit/0"}', "schema"),
        (b'{"schema": "fimaudit.audit/1", "rows": {}}', "'rows'"),
        (
            b'{"schema": "fimaudit.audit/1", "rows": [1], "summary": {}, "settings": {}, "top": [], "input_shape": []}',
            "every entry of 'rows'",
        ),
        (
            b'{"schema": "fimaudit.audit/1", "rows": [], "summary": {}, "settings": {}, "top": [], '
            b'"input_shape": ["<b>"]}',
            "input_shape",
        ),
    ],
)
def test_a_results_file_that_is_not_an_audit_is_refused(tmp_path, content, match):
    (tmp_path / "results.json").write_bytes(content)
    with pytest.raises(InvalidArgumentError, match=match) as err:
        fa.Audit.load(tmp_path)
    assert str(tmp_path / "results.json") in str(err.value)


def test_a_missing_results_file_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "results.json" in capsys.readouterr().err


def test_a_failed_render_or_write_keeps_the_old_files(tmp_path, monkeypatch):
    out = tmp_path / "out"
    a = fa.audit(MODEL, X, Y, progress=False)
    a.save(out)
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    b = fa.audit(MODEL, X[:5], progress=False)

    def boom(audit):
        raise RuntimeError("render failed")

    monkeypatch.setattr(report, "render", boom)
    with pytest.raises(RuntimeError):
        b.save(out)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before  # nothing half-written
    monkeypatch.undo()

    real_replace = os.replace

    def fail_on_report(src, dst):
        if str(dst).endswith("report.html"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_report)
    with pytest.raises(InvalidArgumentError, match="No space left"):
        b.save(out)
    monkeypatch.undo()
    assert (out / "report.html").read_bytes() == before["report.html"]  # the old page, whole
    assert sorted(os.listdir(out)) == sorted(before)  # the temporary file was removed


def test_write_atomic_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    p = tmp_path / "report.html"
    p.write_text("old")
    os.chmod(p, 0o640)
    files.write_atomic(p, "new")
    assert p.read_text() == "new" and (os.stat(p).st_mode & 0o777) == 0o640


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(hostile):
    import csv

    data = json.loads((hostile / "results.json").read_text())
    formulas = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
    for row, text in zip(data["rows"], formulas * len(data["rows"])):
        row["label"], row["status"], row["margin"] = text, text, -0.5
    (hostile / "results.json").write_text(json.dumps(data))
    assert main(["report", str(hostile)]) == 0
    with open(hostile / "results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(data["rows"])
    for row in rows:
        for key in ("label", "status"):
            assert row[key].startswith("'") and row[key][1:] in formulas
        assert row["margin"] == "-0.5"  # numbers are numbers, whatever their sign
