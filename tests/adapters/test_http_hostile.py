"""fimaudit-http against hostile servers on 127.0.0.1: long Retry-After asks, trickled and
endless bodies, gzip bombs, faults that force resends, oversized-batch refusals and servers
that echo credentials back. Every call that a hostile server could hold runs under
``within`` (a bounded wait), every server is closed by its fixture."""

import asyncio
import hashlib
import html
import itertools
import json
import math
import threading
import time
import traceback
import tracemalloc
import zlib
from base64 import b64encode
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, quote_plus

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
fimaudit_http = pytest.importorskip("fimaudit_http")

import fimaudit_http.model as http_module  # noqa: E402
from fimaudit_http import HTTPModel  # noqa: E402
from fimaudit_http.body import BodyTooLarge, excerpt, read_body  # noqa: E402
from fimaudit_http.redact import Redactor  # noqa: E402
from fimaudit_http.request import ERROR_BODY_CAP  # noqa: E402
from fimaudit_http.retry import retry_after  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fimaudit import errors as E  # noqa: E402
from tests.adapters.hostile_server import HostileServer  # noqa: E402

D = 3
W = np.arange(2.0 * D).reshape(D, 2) / 7
X = np.random.default_rng(0).standard_normal((6, D))


def truth(x):
    return np.asarray(x, dtype=np.float64) @ W


def answer(req):
    req.outputs(truth(req.inputs).tolist())


def model(url, **kw):
    kw.setdefault("retries", 2)
    kw.setdefault("backoff", 0.0)
    kw.setdefault("timeout", 3.0)
    return HTTPModel(url, input_shape=(D,), output="logits", **kw)


def within(seconds, fn):
    """``fn()`` in a daemon thread; fails the test if it has not returned after ``seconds``."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as err:  # re-raised in the test's thread
            box["error"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"the call was still running after {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def serve():
    opened = []

    def start(respond):
        server = HostileServer(respond).__enter__()
        opened.append(server)
        return server

    yield start
    for server in opened:
        server.__exit__(None, None, None)


# --- Retry-After ------------------------------------------------------------------
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
LONG_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def http_date(t, form="imf"):
    """``t`` (UTC) in one of the three HTTP-date forms of RFC 9110 §5.6.7, locale-free."""
    day, month, clock = DAYS[t.weekday()], MONTHS[t.month - 1], f"{t:%H:%M:%S}"
    if form == "imf":
        return f"{day}, {t.day:02d} {month} {t.year} {clock} GMT"
    if form == "rfc850":
        return f"{LONG_DAYS[t.weekday()]}, {t.day:02d}-{month}-{t.year % 100:02d} {clock} GMT"
    return f"{day} {month} {t.day:2d} {clock} {t.year}"


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 10**6),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2060, 1, 1)),
    st.sampled_from(["imf", "rfc850", "asctime"]),
)
def test_retry_after_reads_delta_seconds_and_every_http_date_form(delay, reference, form):
    reference = reference.replace(microsecond=0, tzinfo=timezone.utc)
    assert retry_after(str(delay)) == delay
    target = http_date(reference + timedelta(seconds=delay), form)
    assert retry_after(target, date=http_date(reference)) == delay  # counted from the answer's Date
    assert retry_after(target, now=reference.timestamp()) == delay  # or from the local clock


@pytest.mark.parametrize(
    "value,expected",
    [("inf", math.inf), ("9" * 400, math.inf), (" 7 ", 7.0), ("0.05", 0.05), ("soon", None), ("-5", None)]
    + [("nan", None), ("", None), (None, None), ("1e3", None)],
)
def test_retry_after_values_that_are_not_a_wait(value, expected):
    assert retry_after(value) == expected


@pytest.mark.parametrize("ask", ["99999", "inf", "a day from now"])
def test_a_retry_after_longer_than_the_cap_fails_at_once(serve, ask):
    value = http_date(datetime.now(timezone.utc) + timedelta(days=1)) if ask == "a day from now" else ask
    server = serve(lambda req: req.send(503, "busy", {"Retry-After": value}))
    m = model(server.url, retries=3)
    with pytest.raises(E.ServiceError, match=r"max_retry_wait=60 s: pass a larger max_retry_wait=") as info:
        within(3, lambda: m.forward(X))
    assert server.requests == 1 and info.value.status == 503 and "retry after" in str(info.value)


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "1"},
        {
            "Date": http_date(datetime(1994, 11, 6, 8, 49, 37)),
            "Retry-After": http_date(datetime(1994, 11, 6, 8, 49, 38)),
        },
        {
            "Date": http_date(datetime(1994, 11, 6, 8, 49, 37)),
            "Retry-After": http_date(datetime(1994, 11, 6, 8, 49, 38), "rfc850"),
        },
        {
            "Retry-After": http_date(datetime(1994, 11, 6, 8, 49, 38), "asctime"),
            "Date": "Sun, 06 Nov 1994 08:49:37 GMT",
        },
    ],
)
def test_a_retry_after_within_the_cap_is_waited_for(serve, headers):
    times = []

    def respond(req):
        times.append(time.monotonic())
        req.send(503, "busy", headers) if req.number == 0 else answer(req)

    server = serve(respond)
    out = within(5, lambda: model(server.url).forward(X))
    assert np.allclose(out, truth(X), rtol=1e-12, atol=0) and server.requests == 2
    assert 0.95 <= times[1] - times[0] < 2.5  # one second asked


def test_max_retry_wait_is_the_cap(serve):
    server = serve(lambda req: req.send(429, "slow down", {"Retry-After": "2"}))
    with pytest.raises(E.ServiceError, match=r"retry after 2 s .*max_retry_wait=0.5 s"):
        within(3, lambda: model(server.url, max_retry_wait=0.5).forward(X))
    assert server.requests == 1


@pytest.mark.parametrize("garbage", ["soon", "-5", "nan", "1e3x", ""])
def test_an_unreadable_retry_after_falls_back_to_backoff(serve, garbage):
    server = serve(lambda req: req.send(503, "busy", {"Retry-After": garbage}) if req.number == 0 else answer(req))
    out = within(3, lambda: model(server.url, backoff=0.01).forward(X))
    assert np.allclose(out, truth(X), rtol=1e-12, atol=0) and server.requests == 2


# --- one deadline per attempt ----------------------------------------------------------
@pytest.mark.parametrize("gap", [0.2, 0.5])
def test_a_trickling_server_cannot_hold_the_client_past_its_timeout(serve, gap):
    body = json.dumps({"outputs": truth(X).tolist()}).encode()
    server = serve(lambda req: req.trickle(200, body, gap))
    m = model(server.url, timeout=1, retries=0)
    t0 = time.monotonic()
    with pytest.raises(E.ServiceError, match=r"no complete answer within timeout=1 s"):
        within(4, lambda: m.forward(X))
    assert time.monotonic() - t0 < 2.0 and server.requests == 1


def test_each_retry_gets_its_own_deadline(serve):
    body = json.dumps({"outputs": truth(X).tolist()}).encode()
    server = serve(lambda req: req.trickle(200, body, 0.2) if req.number < 2 else answer(req))
    out = within(5, lambda: model(server.url, timeout=0.5, retries=2).forward(X))
    assert np.allclose(out, truth(X), rtol=1e-12, atol=0) and server.requests == 3


# --- size cap after decompression ------------------------------------------------------
MiB = 1 << 20
GZIP = {"Content-Encoding": "gzip"}


@pytest.fixture(scope="module")
def bomb():
    """gzip of 128 MiB of zeros: about 130 kB on the wire."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31, 9, zlib.Z_RLE)
    zeros = bytes(MiB)
    return b"".join([z.compress(zeros) for _ in range(128)] + [z.flush()])


def test_a_declared_oversized_answer_fails_at_once(serve):
    body = json.dumps({"outputs": truth(X).tolist()}).encode()
    body += b" " * (8 * MiB - len(body))  # valid JSON, 8 MiB
    server = serve(lambda req: req.send(200, body))
    with pytest.raises(E.ServiceError, match=r"more than max_response_bytes=1048576 bytes"):
        within(5, lambda: model(server.url, max_response_bytes=MiB).forward(X))
    assert server.requests == 1  # not retried


def test_an_endless_answer_stops_at_the_cap(serve):
    server = serve(lambda req: req.endless(200, b" " * 65536))
    with pytest.raises(E.ServiceError, match="max_response_bytes"):
        within(5, lambda: model(server.url, max_response_bytes=MiB, timeout=10).forward(X))
    assert server.requests == 1


def test_a_gzip_bomb_stops_at_the_cap_without_inflating_in_memory(serve, bomb):
    server = serve(lambda req: req.send(200, bomb, {"Content-Encoding": "gzip"}))
    m = model(server.url, max_response_bytes=MiB, retries=0)
    tracemalloc.start()
    try:
        with pytest.raises(E.ServiceError, match="max_response_bytes"):
            within(10, lambda: m.forward(X))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB  # the bomb inflates to 128 MiB


def test_a_compressed_stream_that_never_inflates_is_cut_by_the_deadline(serve):
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # gzip, then empty stored blocks forever
    empty_blocks = b"\x00\x00\x00\xff\xff" * 20_000
    server = serve(lambda req: req.stream(200, itertools.chain([header], itertools.repeat(empty_blocks)), GZIP))
    t0 = time.monotonic()
    with pytest.raises(E.ServiceError, match="within timeout=1 s"):
        within(4, lambda: model(server.url, timeout=1, retries=0).forward(X))
    assert time.monotonic() - t0 < 2.5


COMPRESS = {
    "gzip": lambda b: zlib.compress(b, wbits=31),
    "x-gzip": lambda b: zlib.compress(b, wbits=31),
    "deflate": zlib.compress,  # zlib-wrapped, as RFC 9110 says
    "raw deflate": lambda b: zlib.compress(b, wbits=-15),  # as some servers send it
}


@pytest.mark.parametrize("coding", sorted(COMPRESS))
def test_compressed_answers_within_the_cap_are_read(serve, coding):
    header = "deflate" if coding == "raw deflate" else coding
    server = serve(lambda req: req.outputs(truth(req.inputs).tolist(), {"Content-Encoding": header}, COMPRESS[coding]))
    out = within(5, lambda: model(server.url, max_batch=4).forward(X))
    assert np.allclose(out, truth(X), rtol=1e-12, atol=0)


def test_a_content_coding_not_asked_for_fails_at_once(serve):
    server = serve(lambda req: req.send(200, b"\x1b\x00\x00", {"Content-Encoding": "br"}))
    with pytest.raises(E.ServiceError, match="content coding 'br'"):
        within(5, lambda: model(server.url, retries=3).forward(X))
    assert server.requests == 1


@pytest.mark.parametrize(
    "body,decode",
    [
        ("[" * 100_000 + "]" * 100_000, None),  # deeper than the JSON parser's recursion
        ("[1, 2]", lambda payload: payload.get("outputs")),  # decode= fails in its own way
    ],
)
def test_hostile_json_is_refused_at_once(serve, body, decode):
    server = serve(lambda req: req.send(200, body))
    kw = {} if decode is None else {"decode": decode}
    with pytest.raises(E.InvalidModelOutputError):
        within(5, lambda: model(server.url, retries=3, **kw).forward(X))
    assert server.requests == 1


class Chunked:
    """A streaming response's surface as read_body uses it: headers and raw chunks."""

    def __init__(self, headers, chunks):
        self.headers, self.chunks = headers, chunks

    async def aiter_raw(self):
        for chunk in self.chunks:
            yield chunk


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(max_size=3000)
    | st.integers(0, 300_000).map(bytes)  # compressible zeros
    | st.integers(60_000, 100_000).map(lambda n: np.random.default_rng(n).bytes(n)),  # raw chunks over 64 KiB
    coding=st.sampled_from(sorted(COMPRESS) + ["identity"]),
    cuts=st.lists(st.integers(0, 10**6), max_size=8),
    cap=st.integers(1, 400_000),
)
@example(payload=np.random.default_rng(0).bytes(70_000), coding="raw deflate", cuts=[], cap=400_000)
@example(payload=b"", coding="raw deflate", cuts=[1], cap=1)  # the zlib wrapper refused on the second byte
def test_read_body_decodes_any_chunking_and_holds_the_cap(payload, coding, cuts, cap):
    raw = payload if coding == "identity" else COMPRESS[coding](payload)
    bounds = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    chunks = [raw[a:b] for a, b in zip(bounds, bounds[1:])]
    header = "deflate" if coding == "raw deflate" else coding
    response = Chunked(httpx.Headers({"content-encoding": header}), chunks)
    if len(payload) > cap:
        with pytest.raises(BodyTooLarge):
            asyncio.run(read_body(response, cap))
        body, was_cut = asyncio.run(read_body(Chunked(response.headers, chunks), cap, cut=True))
        assert (bytes(body), was_cut) == (payload[:cap], True)
    else:
        body, was_cut = asyncio.run(read_body(response, cap))
        assert (bytes(body), was_cut) == (payload, False)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=3000))
def test_excerpt_keeps_the_head_and_the_tail(text):
    shown = excerpt(text)
    if len(text) <= 1000:
        assert shown == text
    else:
        assert shown.startswith(text[:300]) and shown.endswith(text[-700:]) and len(shown) < 1060
        assert f"[{len(text) - 1000} characters left out]" in shown


# --- the row cap charges every send -----------------------------------------------------
def test_resent_rows_are_charged_and_the_cap_holds(serve):
    # every request fails once and is answered when sent again
    server = serve(lambda req: req.send(503, "busy") if req.number % 2 == 0 else answer(req))
    x = np.random.default_rng(1).standard_normal((160, D))
    with pytest.warns(DeprecationWarning, match="max_rows_sent"):
        m = model(server.url, budget=100, max_batch=20, concurrency=1)
    with pytest.raises(E.QueryBudgetExceeded, match="max_rows_sent=100"):
        within(10, lambda: m.forward(x))
    assert server.rows <= 100 and m.sent == server.rows


def test_answers_before_the_cap_are_kept_and_a_rerun_pays_only_for_the_rest(serve, tmp_path):
    server = serve(answer)
    x = np.random.default_rng(2).standard_normal((40, D))
    cache = tmp_path / "cache.sqlite"
    m = model(server.url, max_rows_sent=25, max_batch=10, concurrency=1, cache=cache)
    with pytest.raises(E.QueryBudgetExceeded, match="raise max_rows_sent=") as info:
        within(10, lambda: m.forward(x))
    assert info.value.partial == {"answered": 20, "missing": 20} and server.rows == 20 == m.sent
    out = within(10, lambda: model(server.url, max_rows_sent=20, cache=cache).forward(x))
    assert np.allclose(out, truth(x), rtol=1e-12, atol=0) and server.rows == 40


def test_after_a_failure_no_request_starts_and_those_in_flight_are_kept(serve, tmp_path):
    x = np.random.default_rng(5).standard_normal((6, D))

    def respond(req):
        if np.array_equal(req.inputs[0], x[2]):  # the second request fails at once
            return req.send(400, "bad request")
        time.sleep(0.3)  # the first is still in flight then
        answer(req)

    server = serve(respond)
    cache = tmp_path / "cache.sqlite"
    with pytest.raises(E.ServiceError, match="HTTP 400"):
        within(5, lambda: model(server.url, max_batch=2, concurrency=2, cache=cache).forward(x))
    assert server.requests == 2  # the third request never started
    # the first request's answer was kept: a model that may send nothing reads it from the cache
    out = within(5, lambda: model(server.url, max_rows_sent=0, cache=cache).forward(x[:2]))
    assert np.allclose(out, truth(x[:2]), rtol=1e-12, atol=0) and server.requests == 2


FAULTS = ["ok", "ok", "503", "hang up", "413", "504", "truncated"]


def test_rows_received_never_exceed_the_cap():
    state = {"pattern": ["ok"], "base": 0}

    def respond(req):
        pattern = state["pattern"]
        fault = pattern[(req.number - state["base"]) % len(pattern)]
        if fault == "ok":
            answer(req)
        elif fault == "hang up":
            req.hang_up()
        elif fault == "truncated":
            body = json.dumps({"outputs": truth(req.inputs).tolist()}).encode()
            req.send(200, body[: len(body) // 2])
        else:
            req.send(int(fault), "fault")

    with HostileServer(respond) as server:

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            cap=st.integers(0, 60),
            n=st.integers(1, 40),
            max_batch=st.integers(1, 16),
            retries=st.integers(0, 3),
            concurrency=st.sampled_from([1, 3]),
            pattern=st.lists(st.sampled_from(FAULTS), min_size=1, max_size=6),
        )
        def check(cap, n, max_batch, retries, concurrency, pattern):
            state["pattern"], state["base"], before = pattern, server.requests, server.rows
            x = np.random.default_rng(n).standard_normal((n, D))
            m = model(server.url, max_rows_sent=cap, max_batch=max_batch, retries=retries, concurrency=concurrency)
            try:
                out = within(20, lambda: m.forward(x))
            except (E.QueryBudgetExceeded, E.ServiceError, E.InvalidModelOutputError):
                pass
            else:
                assert np.allclose(out, truth(x), rtol=1e-12, atol=0)
            assert server.rows - before <= m.sent <= cap

        check()


# --- oversized batches are split ----------------------------------------------------------
def test_a_413_splits_the_batch_and_every_part_is_charged(serve):
    server = serve(lambda req: req.send(413, "payload too large") if len(req.inputs) > 3 else answer(req))
    x = np.random.default_rng(3).standard_normal((16, D))
    m = model(server.url, max_batch=16, concurrency=1)
    out = within(10, lambda: m.forward(x))

    def sizes(n):  # the requests a batch of n rows makes: refused above 3, then its halves
        return [n] if n <= 3 else [n] + sizes(n // 2) + sizes(n - n // 2)

    assert np.allclose(out, truth(x), rtol=1e-12, atol=0)
    assert server.sizes == sizes(16) and m.sent == server.rows == sum(sizes(16))


def test_a_repeated_504_splits_a_batch(serve):
    server = serve(lambda req: req.send(504, "gateway timeout") if len(req.inputs) > 2 else answer(req))
    x = np.random.default_rng(4).standard_normal((8, D))
    m = model(server.url, max_batch=8, concurrency=1)
    out = within(10, lambda: m.forward(x))

    def sizes(n):  # two 504s, then the halves
        return [n] if n <= 2 else [n, n] + sizes(n // 2) + sizes(n - n // 2)

    assert np.allclose(out, truth(x), rtol=1e-12, atol=0) and server.sizes == sizes(8) and m.sent == server.rows


def test_a_single_row_is_never_split(serve):
    server = serve(lambda req: req.send(504, "gateway timeout"))
    with pytest.raises(E.ServiceError, match="HTTP 504"):
        within(5, lambda: model(server.url, retries=2).forward(X[:1]))
    assert server.sizes == [1, 1, 1]
    server = serve(lambda req: req.send(413, "payload too large"))
    with pytest.raises(E.ServiceError, match="HTTP 413"):
        within(5, lambda: model(server.url, retries=2).forward(X[:1]))
    assert server.sizes == [1]


# --- error bodies: head and tail -------------------------------------------------------------
def test_an_error_body_shows_its_head_and_its_tail(serve):
    body = '{"echo": "' + "i" * 5000 + '", "error": "CAUSE: expected 4 features, got 3"}'
    server = serve(lambda req: req.send(400, body))
    with pytest.raises(E.ServiceError) as info:
        within(5, lambda: model(server.url).forward(X))
    msg = str(info.value)
    assert '{"echo": "iii' in msg and "CAUSE: expected 4 features, got 3" in msg and len(msg) < 1500


# --- hashing only for the log --------------------------------------------------------------------
def test_request_bodies_are_hashed_only_for_the_log(serve, tmp_path, monkeypatch):
    server = serve(answer)
    calls = []

    class Counting:
        def sha256(self, *args):
            calls.append(1)
            return hashlib.sha256(*args)

        def __getattr__(self, name):
            return getattr(hashlib, name)

    monkeypatch.setattr(http_module, "hashlib", Counting())
    within(5, lambda: model(server.url, max_batch=2).forward(X))
    assert calls == [] and server.requests == 3
    log = tmp_path / "log"
    within(5, lambda: model(server.url, max_batch=2, log=log).forward(X))
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == len(entries) == 3
    bodies = [body for _, _, body in server.seen[3:]]
    assert {e["request"] for e in entries} == {hashlib.sha256(b).hexdigest()[:16] for b in bodies}


def test_one_tls_context_serves_every_round(serve, monkeypatch):
    built = []
    real = httpx.create_ssl_context
    monkeypatch.setattr(httpx, "create_ssl_context", lambda *a, **k: built.append(1) or real(*a, **k))
    server = serve(answer)
    m = model(server.url)
    for i in range(3):
        within(5, lambda: m.forward(X + i))
    assert server.requests == 3 and len(built) == 1


# --- validation of every argument ------------------------------------------------------------------
BAD = [
    ({"url": "ftp://host/predict"}, "http:// or https://"),
    ({"url": "http:///predict"}, "with a host"),
    ({"url": 42}, "must be a string"),
    ({"url": "http://host:99999999/predict"}, "not a valid URL"),
    ({"timeout": 0}, "timeout must be a finite number of seconds > 0"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": math.inf}, "timeout"),
    ({"timeout": math.nan}, "timeout"),
    ({"timeout": "3"}, "timeout"),
    ({"retries": -1}, "retries must be an integer >= 0"),
    ({"retries": 1.5}, "retries"),
    ({"retries": True}, "retries"),
    ({"backoff": -0.1}, "backoff must be a finite number of seconds >= 0"),
    ({"backoff": math.inf}, "backoff"),
    ({"max_backoff": -1}, "max_backoff"),
    ({"max_backoff": math.nan}, "max_backoff"),
    ({"max_retry_wait": -1}, "max_retry_wait"),
    ({"max_retry_wait": math.inf}, "max_retry_wait"),
    ({"max_response_bytes": 0}, "max_response_bytes must be an integer >= 1"),
    ({"max_response_bytes": 1.5}, "max_response_bytes"),
    ({"max_rows_sent": -1}, "max_rows_sent must be an integer >= 0 or None"),
    ({"max_rows_sent": 2.5}, "max_rows_sent"),
    ({"budget": 5, "max_rows_sent": 5}, "max_rows_sent= only"),
    ({"headers": [("X-Key", "v")]}, "headers must be a mapping"),
    ({"headers": {"X-Key": 5}}, "must be a str"),
    ({"headers": {5: "v"}}, "not a valid HTTP header name"),
    ({"headers": {"Bad Name": "v"}}, "not a valid HTTP header name"),
    ({"headers": {"X-Key": "s3cret-value\r\nInjected: 1"}}, "line break"),
    ({"headers": {"X-Key": "s3cret-välue"}}, "non-ASCII"),
    ({"max_batch": 0}, "max_batch"),
    ({"concurrency": 0}, "concurrency"),
    ({"rate_limit": 0}, "rate_limit must be a finite number of requests per second > 0"),
    ({"encode": None}, "callables"),
]


@pytest.mark.parametrize("kw,match", BAD, ids=[f"{next(iter(k))}={list(k.values())[-1]!r}" for k, _ in BAD])
def test_every_invalid_argument_is_refused_up_front(kw, match):
    kw = dict(kw)
    url = kw.pop("url", "http://127.0.0.1:9/predict")
    with pytest.raises(E.InvalidArgumentError, match=match) as info:
        HTTPModel(url, input_shape=(D,), **kw)
    assert "s3cret" not in str(info.value)


# --- secrets never shown ---------------------------------------------------------------------------
KEY = 'k3y-"quoted"\\back/slash?&=+ü%'
SIG = "sig-0123456789abcdef"
BARE = "bare-token-0001"
USER, PASSWORD = "alice@corp", "pa:ss w/rd'<>"
TOKEN = "tok-<script>&\"'\\end"
API_KEY = "xk-9f8e7d6c5b4a"
SECRETS = [KEY, SIG, BARE, USER, PASSWORD, TOKEN, API_KEY, b64encode(f"{USER}:{PASSWORD}".encode()).decode()]


def spellings(secret):
    return {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        html.escape(secret),
        repr(secret)[1:-1],
    }


def hostile_url(server):
    return (
        f"http://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}/predict"
        f"?key={quote(KEY, safe='')}&sig={SIG}&{BARE}"
    )


def echo(req):
    """Everything the client sent, as a careless server puts it in an error page."""
    return json.dumps({"path": req.path, "headers": req.headers}) + " " + req.path


SCENARIOS = {
    "client error": lambda req: req.send(400, echo(req)),
    "retries exhausted": lambda req: req.send(503, echo(req)),
    "long body": lambda req: req.send(400, echo(req) + "x" * 5000 + echo(req)),
    "cut body": lambda req: req.send(400, "y" * (ERROR_BODY_CAP - 6) + KEY + echo(req)),
    "decode fails": lambda req: req.send(200, json.dumps({"echo": echo(req)})),
    "hang up": lambda req: req.hang_up(),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("auth", ["userinfo", "bearer"])
def test_no_secret_in_any_message_log_or_repr(serve, tmp_path, scenario, auth):
    server = serve(SCENARIOS[scenario])
    url = hostile_url(server)
    headers = {"X-Api-Key": API_KEY}
    if auth == "bearer":  # the URL's userinfo would replace this header
        url = url.replace(f"{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@", "")
        headers["Authorization"] = f"Bearer {TOKEN}"

    def leaky_decode(payload):
        raise KeyError(json.dumps(payload))

    log = tmp_path / "log"
    m = model(url, headers=headers, log=log, retries=1, decode=leaky_decode)
    with pytest.raises(E.FimauditError) as info:
        within(10, lambda: m.forward(X))
    seen = server.seen[0][0] + json.dumps(server.seen[0][1])
    assert quote(KEY, safe="") in seen and API_KEY in seen  # the secrets did reach the server
    texts = {
        "message": str(info.value),
        "traceback": "".join(traceback.format_exception(info.value)),
        "log": log.read_text() if log.exists() else "",
        "repr": repr(m) + str(m),
    }
    for where, text in texts.items():
        for secret in SECRETS:
            for form in spellings(secret):
                assert form not in text, f"{form!r} in the {where}"
    assert KEY[:6] not in texts["message"]  # a secret cut in two by the body cap is not shown in part
    assert "127.0.0.1" in texts["message"] or scenario == "decode fails"


@settings(max_examples=80, deadline=None)
@given(
    url_secret=st.text(st.characters(blacklist_categories=["Cs"]), min_size=4, max_size=16),
    header_secret=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=4, max_size=16),
    filler=st.text(max_size=24),
)
@example(url_secret="abcd", header_secret="x***", filler="x")  # the mask next to a secret's head spells it
def test_redaction_masks_every_spelling_and_nothing_else(url_secret, header_secret, filler):
    q = quote(url_secret, safe="")
    redact = Redactor(f"https://{q}:{q}@host/p?key={q}&{q}", {"X-Key": header_secret})
    for secret in (url_secret, header_secret):
        for form in spellings(secret):
            shown = redact(filler + form + filler)
            assert all(f not in shown for s in (url_secret, header_secret) for f in spellings(s) if len(f) >= 4)
    if not any(f in filler for s in (url_secret, header_secret) for f in spellings(s)):
        assert redact(filler) == filler  # text without a secret is left as it is
    assert url_secret not in redact.url and q not in redact.url and "host/p" in redact.url


def test_a_bad_url_is_refused_without_its_credentials():
    with pytest.raises(E.InvalidArgumentError) as info:
        HTTPModel(f"ftp://{USER}:{quote(PASSWORD, safe='')}@host/?key={quote(KEY, safe='')}", input_shape=(D,))
    for secret in SECRETS:
        for form in spellings(secret):
            assert form not in str(info.value)
