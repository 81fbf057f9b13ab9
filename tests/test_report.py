"""report.html: every input in one table sorted by λ_max, plots with ticks inside the data,
thumbnails that are the inputs' pixels, provenance recorded when the audit runs and kept in
results.json, warnings counted once each; rendered in headless Chromium where it exists."""

import base64
import datetime
import hashlib
import math
import platform
import re
import struct
import warnings
import zlib
from collections import Counter
from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.audit import report_table
from fimaudit.audit.provenance import collect_warnings
from fimaudit.audit.report import render
from fimaudit.audit.report_plots import log_ticks, nice_ticks
from fimaudit.cli import main
from fimaudit.testing import LinearModel, MLPModel
from tests.browser import CHROMIUM, headless

MODEL = MLPModel.random([6, 8, 3], seed=4)
X = np.random.default_rng(5).standard_normal((30, 6))
Y = np.random.default_rng(6).integers(0, 3, 30)


# ---------------------------------------------------------------- page parsing (the test's own)


class Cells(HTMLParser):
    """Rows of the inputs table (header first), tick labels of each plot, the text, the images."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.rows, self.ticks, self.text, self.imgs, self.marks = [], {}, [], [], Counter()
        self._table = self._cell = self._tick = None
        self._plot = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("class")
        elif tag == "tr" and self._table == "inputs":
            self.rows.append([])
        elif tag in ("td", "th") and self._table == "inputs":
            self._cell = []
        elif tag == "svg":
            self._plot = (a.get("class") or "").replace("plot ", "")
        elif tag == "text" and (a.get("class") or "").startswith("tick"):
            self._tick = (self._plot, a["class"].split()[1])
        elif tag in ("rect", "circle") and self._plot == "scatter":
            self.marks[(tag, a.get("fill"))] += 1
        elif tag == "img":
            self.imgs.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "text":
            self._tick = None
        elif tag == "svg":
            self._plot = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._tick is not None:
            self.ticks.setdefault(self._tick, []).append(data)


def _table(page):
    head, *body = page.rows
    return head, [dict(zip(head, r)) for r in body]


def _png_pixels(data):
    """The pixels of an 8-bit PNG (greyscale, RGB or RGBA, no interlace) as (H, W, channels)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0]
        ihdr = body if kind == b"IHDR" else ihdr
        idat += body if kind == b"IDAT" else b""
        pos += 12 + n
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    assert depth == 8 and interlace == 0
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), np.int64)
    prev = np.zeros(w * bpp, np.int64)
    for i in range(h):
        f, line = raw[i, 0], raw[i, 1:].astype(np.int64)
        if f == 0:
            row = line
        elif f == 1:
            row = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) % 256
        elif f == 2:
            row = (line + prev) % 256
        else:
            row, ln, up = [0] * (w * bpp), line.tolist(), prev.tolist()
            for j in range(w * bpp):
                left = row[j - bpp] if j >= bpp else 0
                ul = up[j - bpp] if j >= bpp else 0
                if f == 3:
                    pred = (left + up[j]) // 2
                else:
                    p = left + up[j] - ul
                    pa, pb, pc = abs(p - left), abs(p - up[j]), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else (up[j] if pb <= pc else ul)
                row[j] = (ln[j] + pred) % 256
            row = np.array(row, np.int64)
        out[i], prev = row, row
    return out.reshape(h, w, bpp)


def _filtered(px):
    """Scanlines of an RGB image, row i with PNG filter type i % 5 (the forward filters of the PNG spec)."""
    h, w, bpp = px.shape
    rows, prev = [], [0] * (w * bpp)
    for i, row in enumerate(px.reshape(h, -1).astype(int).tolist()):
        f, out = i % 5, []
        for j, v in enumerate(row):
            left, up, ul = (row[j - bpp] if j >= bpp else 0), prev[j], (prev[j - bpp] if j >= bpp else 0)
            p = left + up - ul
            paeth = min((abs(p - left), 0, left), (abs(p - up), 1, up), (abs(p - ul), 2, ul))[2]
            out.append((v - [0, left, up, (left + up) // 2, paeth][f]) % 256)
        rows.append(bytes([f, *out]))
        prev = row
    return b"".join(rows)


def test_png_reader_reads_every_filter_type():
    """The reader above, on a PNG made here with all five filter types (fimaudit writes only type 0)."""
    px = np.random.default_rng(3).integers(0, 256, (10, 7, 3), dtype=np.uint8)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 10, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(_filtered(px))) + chunk(b"IEND", b"")
    assert np.array_equal(_png_pixels(png), px)


# ---------------------------------------------------------------- the table


def test_every_input_is_one_row_sorted_by_lambda_with_missing_labels_as_a_dash():
    a = fa.audit(MODEL, X, progress=False)  # no labels
    head, rows = _table(Cells(render(a)))
    assert len(rows) == len(X)
    expected = sorted(a.rows, key=lambda r: -r["lambda_max"])
    assert [int(r["index"]) for r in rows] == [r["index"] for r in expected]
    assert [float(r["λ_max"]) for r in rows] == [float(format(r["lambda_max"], ".4g")) for r in expected]
    assert {r["label"] for r in rows} == {"–"} and "None" not in render(a)
    assert "certified radius" not in head  # no graph bound for a numpy model
    assert [int(r["queries"]) for r in rows] == [r["queries"] for r in expected]


def test_misclassified_inputs_are_marked_and_failed_rows_come_last():
    a = fa.audit(MODEL, X, Y, progress=False)
    a.rows[3].update(lambda_max=None, status="error: InvalidModelOutputError: NaN logits")
    _, rows = _table(Cells(render(a)))
    wrong = {r["index"] for r in a.rows if r["label"] != r["prediction"]}
    assert {int(r["index"]) for r in rows if "✗" in r["prediction"]} == wrong and wrong
    assert rows[-1]["index"] == "3" and rows[-1]["status"].startswith("error:")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.just(float("nan")), st.floats(0, 1e6)),
            st.one_of(st.none(), st.integers(0, 3)),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_any_rows_are_listed_once_each_largest_lambda_first(cells):
    rows = [
        dict(index=i, lambda_max=lam, label=label, prediction=pred, confidence=0.5, margin=0.1, queries=3, status="ok")
        for i, (lam, label, pred) in enumerate(cells)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow in the plots, even for subnormal λ_max
        page = Cells(render(fa.Audit(rows=rows, summary={}, settings={}, input_shape=(6,))))
    _, shown = _table(page)
    numbers = [i for i, (lam, _, _) in enumerate(cells) if lam is not None and math.isfinite(lam)]
    want = sorted(numbers, key=lambda i: -cells[i][0]) + [i for i in range(len(cells)) if i not in numbers]
    assert [int(r["index"]) for r in shown] == want
    assert [r["label"] for r in shown] == ["–" if cells[i][1] is None else str(cells[i][1]) for i in want]
    wrong = [i for i in want if cells[i][1] is not None and cells[i][1] != cells[i][2]]
    assert [int(r["index"]) for r in shown if "✗" in r["prediction"]] == wrong


# ---------------------------------------------------------------- plots


def test_one_input_equal_values_and_no_values_still_render():
    one = Cells(render(fa.audit(MODEL, X[:1], progress=False)))
    assert len(_table(one)[1]) == 1 and len(one.ticks[("histogram", "y")]) >= 2
    same = fa.audit(MODEL, X[:6], progress=False)
    for r in same.rows:
        r.update(lambda_max=2.0, confidence=0.5)
    page = Cells(render(same))
    assert [float(t) for t in page.ticks[("histogram", "x")]] == [2.0]
    assert [float(t) for t in page.ticks[("scatter", "y")]] == [0.5]
    failed = fa.audit(MODEL, X[:6], progress=False)
    for r in failed.rows:
        r.update(lambda_max=None, status="error: InvalidModelOutputError: NaN logits")
    text = "".join(Cells(html := render(failed)).text)
    assert "No λ_max to plot" in text and "error: InvalidModelOutputError: NaN logits" in text and "6" in text
    assert "None" not in html


def _in_range(labels, lo, hi):
    values = [float(t) for t in labels]
    return values and all(lo <= v <= hi for v in values)


def test_plot_ticks_lie_in_the_data_and_lambda_uses_a_log_axis_across_decades():
    a = fa.audit(MODEL, X, Y, progress=False)
    lam = np.array([r["lambda_max"] for r in a.rows])
    for r, scale in zip(a.rows, np.geomspace(1e-4, 1e2, len(a.rows))):  # λ_max over six decades
        r["lambda_max"] *= scale
    lam = np.array([r["lambda_max"] for r in a.rows])
    conf = np.array([r["confidence"] for r in a.rows])
    page = Cells(html := render(a))
    for plot in ("histogram", "scatter"):
        x = page.ticks[(plot, "x")]
        assert len(x) >= 3 and _in_range(x, lam.min(), lam.max())
        assert all(math.log10(float(t)).is_integer() for t in x)  # decades: a log axis
    assert _in_range(page.ticks[("scatter", "y")], conf.min(), conf.max())
    counts = [int(t) for t in page.ticks[("histogram", "y")]]
    assert counts[0] == 0 and max(counts) <= len(a.rows)
    wrong = sum(r["label"] != r["prediction"] for r in a.rows)
    assert page.marks[("rect", "#c0392b")] == wrong and page.marks[("circle", "#3b6ea8")] == len(a.rows) - wrong
    assert f"{len(a.rows)} inputs, {wrong} misclassified" in html and "log scale" in html


def test_a_narrow_lambda_range_gets_a_linear_axis_with_evenly_spaced_ticks():
    a = fa.audit(LinearModel(np.eye(3, 6)), X, progress=False)
    for r, t in zip(a.rows, np.linspace(2.0, 3.0, len(a.rows))):
        r["lambda_max"] = t
    x = [float(t) for t in Cells(render(a)).ticks[("histogram", "x")]]
    assert len(x) >= 3 and _in_range(x, 2.0, 3.0)
    assert np.allclose(np.diff(x), x[1] - x[0])


@settings(max_examples=60, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(1e-6, 1e6), st.integers(3, 9))
def test_nice_ticks_are_inside_evenly_spaced_and_round(lo, span, n):
    hi = lo + span
    if span < 1e-9 * max(1.0, abs(lo)):
        return
    ticks, labels = nice_ticks(lo, hi, n)
    assert 2 <= len(ticks) <= 2 * n + 1
    assert all(lo - 1e-9 * span <= t <= hi + 1e-9 * span for t in ticks)
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0], rtol=1e-6)
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6
    assert [float(s) for s in labels] == pytest.approx(ticks, rel=1e-9, abs=1e-9 * span)


@settings(max_examples=60, deadline=None)
@given(st.floats(-12, 12), st.floats(1, 14))  # a log axis spans a decade or more
def test_log_ticks_are_inside_and_few(log_lo, decades):
    lo, hi = 10.0**log_lo, 10.0 ** (log_lo + decades)
    ticks = log_ticks(lo, hi)
    assert 1 <= len(ticks) <= 9 and all(lo <= t <= hi for t in ticks) and ticks == sorted(ticks)


# ---------------------------------------------------------------- thumbnails


def test_thumbnails_are_the_inputs_pixels_and_their_bytes_are_capped(monkeypatch):
    shape = (1, 4, 5)
    rng = np.random.default_rng(0)
    model = LinearModel(rng.standard_normal((3, 20)), input_shape=shape)
    Xi = rng.uniform(0, 1, (12, *shape))
    a = fa.audit(model, Xi, top=6, progress=False)
    page = Cells(render(a))
    inputs = [i for i in page.imgs if i["alt"] == "input"]
    assert len(inputs) == 6 and len([i for i in page.imgs if i["alt"] == "direction"]) == 6
    assert "Thumbnails drawn for 6 of 12 inputs" in "".join(page.text)
    _, rows = _table(page)
    first = Xi[int(rows[0]["index"])][0]
    want = np.round(255 * (first - first.min()) / (first.max() - first.min()))
    got = _png_pixels(base64.b64decode(inputs[0]["src"].split(",", 1)[1]))[..., 0]
    assert np.array_equal(got, want)
    one = sum(len(i["src"]) for i in page.imgs) / 6
    monkeypatch.setattr(report_table, "THUMBNAIL_BYTES", int(2.5 * one))
    page = Cells(render(a))
    assert len(page.imgs) == 4 and "Thumbnails drawn for 2 of 12 inputs" in "".join(page.text)


# ---------------------------------------------------------------- provenance and warnings


def test_provenance_is_recorded_at_audit_time_and_kept_in_results_json(tmp_path, capsys):
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    a = fa.audit(MODEL, X, Y, method="power", budget=4000, top=3, seed=2, progress=False)
    after = datetime.datetime.now(datetime.timezone.utc)
    p = a.provenance
    assert p["fimaudit"] == fa.__version__ and p["numpy"] == np.__version__
    assert p["python"] == platform.python_version()
    assert before <= datetime.datetime.fromisoformat(p["created"]) <= after
    digest = hashlib.sha256(f"{X.dtype.str}|{X.shape}|".encode() + X.tobytes()).hexdigest()
    assert p["data"] == digest and p["model"] == a.settings["model"] and len(p["model"]) == 64
    assert {k: p["settings"][k] for k in ("method", "budget", "top", "seed", "bound")} == dict(
        method="power", budget=4000, top=3, seed=2, bound=True
    )
    out = tmp_path / "out"
    a.save(out)
    assert fa.Audit.load(out).provenance == p
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    text = "".join(Cells((out / "report.html").read_text()).text)
    assert "Provenance" in text and fa.__version__ in text and digest[:16] in text and p["created"] in text


def test_a_results_json_without_provenance_still_renders(tmp_path):
    import json

    out = tmp_path / "out"
    fa.audit(MODEL, X[:4], progress=False).save(out)
    data = json.loads((out / "results.json").read_text())
    del data["provenance"], data["warnings"]
    (out / "results.json").write_text(json.dumps(data))
    assert main(["report", str(out)]) == 0
    assert "Not recorded" in (out / "report.html").read_text()


class Warns(LinearModel):
    """A linear model that warns on every forward call, naming the call; it counts its calls."""

    calls = 0

    def forward(self, x):
        Warns.calls += 1
        warnings.warn(f"odd output on call {Warns.calls} for rows [{len(x)}]", UserWarning, stacklevel=2)
        if Warns.calls == 1:
            warnings.warn("first call", RuntimeWarning, stacklevel=2)
            warnings.warn("old API", DeprecationWarning, stacklevel=2)  # about code: re-emitted, not stored
        return super().forward(x)


def test_warnings_raised_during_the_audit_are_counted_once_each():
    Warns.calls = 0
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        a = fa.audit(Warns(np.eye(3, 6)), X, batch_size=7, progress=False)
    calls = Warns.calls
    assert calls >= 5  # at least one per chunk
    assert a.warnings == [
        dict(category="UserWarning", message="odd output on call 1 for rows [7]", count=calls),
        dict(category="RuntimeWarning", message="first call", count=1),
    ]
    assert [(w.category, str(w.message)) for w in seen] == [
        (UserWarning, "odd output on call 1 for rows [7]"),
        (RuntimeWarning, "first call"),
        (DeprecationWarning, "old API"),
    ]  # re-emitted once each
    text = "".join(Cells(render(a)).text)
    assert "odd output on call 1" in text and f"{calls}" in text and "call 2 " not in text


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([UserWarning, RuntimeWarning]), st.integers(0, 2), st.integers(0, 999))))
def test_warnings_group_by_category_and_message_without_its_numbers(events):
    templates = ["λ_max {} too large", "inputs [{}, 1] noisy at step {}e-3", "plain"]
    records = [
        warnings.WarningMessage(cat(templates[t].format(k, k)), cat, "f.py", 1) for cat, t, k in events
    ]  # fmt: skip
    got = [(w.category, templates.index(_template(str(w.message))), n) for w, n in collect_warnings(records)]
    want = Counter((cat, t) for cat, t, _ in events)
    assert sorted(got, key=str) == sorted(((c, t, n) for (c, t), n in want.items()), key=str)
    firsts = list(dict.fromkeys((cat, t) for cat, t, _ in events))
    assert [(c, t) for c, t, _ in got] == firsts


def _template(message):
    for t in ("λ_max {} too large", "inputs [{}, 1] noisy at step {}e-3", "plain"):
        if re.fullmatch(re.escape(t).replace(r"\{\}", r"\d+"), message):
            return t
    raise AssertionError(message)


# ---------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def demo_audit():
    from fimaudit.demo import load_demo

    model, Xd, _ = load_demo()
    return fa.audit(model, Xd[:24], method="exact", progress=False)  # no labels; an ONNX graph: a bound


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_page_in_a_browser_has_every_row_the_radius_and_the_provenance(demo_audit, tmp_path):
    a = demo_audit
    page = a.save(tmp_path / "out")
    proc = headless(tmp_path, page, "--dump-dom")
    dom = Cells(proc.stdout)
    head, rows = _table(dom)
    assert len(rows) == 24, proc.stderr[-2000:]
    lam = [float(r["λ_max"]) for r in rows]
    assert lam == sorted(lam, reverse=True)
    L = a.summary["bound"]["lipschitz"]
    by_index = {r["index"]: r for r in a.rows}
    assert "certified radius" in head
    for r in rows:
        radius = by_index[int(r["index"])]["margin"] / (math.sqrt(2.0) * L)
        assert float(r["certified radius"]) == pytest.approx(radius, rel=1e-3)
    assert {r["label"] for r in rows} == {"–"}
    text = "".join(dom.text)
    assert "Provenance" in text and fa.__version__ in text and "None" not in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_screenshot_of_the_page_is_not_blank(demo_audit, tmp_path):
    page = demo_audit.save(tmp_path / "out")
    shot = tmp_path / "page.png"
    proc = headless(tmp_path, page, f"--screenshot={shot}", "--window-size=800,900")
    assert shot.exists(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert len(data) > 10_000
    px = _png_pixels(data)[..., :3]
    assert px.shape[:2] == (900, 800)
    colours = np.unique(px.reshape(-1, 3), axis=0)
    white = np.all(px == 255, axis=-1).mean()
    assert len(colours) > 20 and 0.02 < 1 - white < 0.9
