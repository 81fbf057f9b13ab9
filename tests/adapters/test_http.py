"""fimaudit-http against a real local HTTP service with injected faults."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("httpx")
fimaudit_http = pytest.importorskip("fimaudit_http")

from fimaudit_http.testing import FakeVendor  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit import errors as E  # noqa: E402
from fimaudit.testing import MLPModel  # noqa: E402

D, C = 12, 4
MLP = MLPModel.random([D, 16, C], seed=3, scale=2.0)
X = np.random.default_rng(0).standard_normal((3, D))


def predict(x):
    z = MLP.forward(x)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# the same batches as the service gets (max_batch=16): BLAS rounding depends on the batch shape
LOCAL = fa.fisher_norm(fa.wrap(predict, input_shape=(D,), output="probs", batch_size=16), X, method="exact")


def http_model(url, **kw):
    kw.setdefault("retries", 4)
    kw.setdefault("backoff", 0.01)
    return fa.wrap(url, input_shape=(D,), num_outputs=C, max_batch=16, **kw)


def test_remote_audit_equals_the_local_one(tmp_path):
    with FakeVendor(predict) as vendor:
        m = http_model(vendor.url, concurrency=4, headers={"Authorization": "Bearer s3cret"}, log=tmp_path / "log")
        r = fa.fisher_norm(m, X, method="exact")
    assert np.array_equal(r.value, LOCAL.value)  # JSON round-trips float64 exactly
    assert np.all(r.queries == LOCAL.queries) and vendor.rows == LOCAL.queries.sum()
    assert all(h.get("Authorization") == "Bearer s3cret" for h in vendor.headers_seen)
    log = (tmp_path / "log").read_text()
    assert "s3cret" not in log and "Authorization" not in log
    assert all(json.loads(line)["status"] == 200 for line in log.splitlines())


def test_faults_are_retried_and_results_unchanged(tmp_path):
    faults = ["429", "429", "429", "500", "503", "slow", "truncated", "502"]
    with FakeVendor(predict, faults) as vendor:
        m = http_model(vendor.url, timeout=0.3, concurrency=1, retries=10, log=tmp_path / "log")
        r = fa.fisher_norm(m, X, method="exact")
    assert np.array_equal(r.value, LOCAL.value)
    lines = [json.loads(s) for s in (tmp_path / "log").read_text().splitlines()]
    assert sum(entry["retries"] for entry in lines) == len(faults)


def test_client_errors_fail_fast():
    with FakeVendor(predict, ["400"] * 10) as vendor:
        with pytest.raises(E.ServiceError, match="HTTP 400") as info:
            fa.fisher_norm(http_model(vendor.url), X)
    assert info.value.status == 400 and vendor.requests == 1  # no retry storm


@pytest.mark.parametrize(
    "fault,error,match",
    [
        ("malformed", E.InvalidModelOutputError, "malformed response"),
        ("short", E.InvalidModelOutputError, "batch of"),
    ],
)
def test_bad_answers_are_refused(fault, error, match):
    with FakeVendor(predict, [fault]) as vendor:
        with pytest.raises(error, match=match):
            fa.fisher_norm(http_model(vendor.url, concurrency=1), X)


def test_retries_exhausted_name_the_last_failure():
    with FakeVendor(predict, ["503"] * 50) as vendor:
        with pytest.raises(E.ServiceError, match="HTTP 503"):
            fa.fisher_norm(http_model(vendor.url, retries=2, concurrency=1), X)
    assert vendor.requests == 3


def test_budget_and_cache_pay_for_no_row_twice(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with FakeVendor(predict) as vendor:
        m = http_model(vendor.url, cache=cache, max_rows_sent=40)
        with pytest.raises(E.QueryBudgetExceeded, match="raise max_rows_sent") as info:
            fa.fisher_norm(m, X, method="exact")
        assert 0 < vendor.rows <= 40 and info.value.partial["missing"] > 0
        r = fa.fisher_norm(http_model(vendor.url, cache=cache), X, method="exact")
        # the rows not yet cached go out in other batches than LOCAL's, and the service's BLAS
        # rounds a row differently in a batch of another shape (~1e-16): equal to ~1e-11
        assert np.allclose(r.value, LOCAL.value, rtol=1e-9, atol=0)
        assert len(vendor.keys) == len(set(vendor.keys))  # no row sent twice
        before = vendor.rows
        fa.fisher_norm(http_model(vendor.url, cache=cache), X, method="exact")
        assert vendor.rows == before  # a rerun is free


def test_a_killed_run_resumes_without_repeating_queries(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with FakeVendor(predict) as vendor:
        code = (
            "import sys, numpy as np, fimaudit as fa\n"
            f"sys.path.insert(0, {os.getcwd()!r})\n"
            "from tests.adapters.test_http import X, D, C\n"
            f"m = fa.wrap({vendor.url!r}, input_shape=(D,), num_outputs=C, max_batch=2, concurrency=1, "
            f"cache={str(cache)!r}, rate_limit=100)\n"
            "fa.fisher_norm(m, X, method='exact')\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.time() + 60
        while vendor.rows < 10 and time.time() < deadline:
            time.sleep(0.02)
        proc.kill()  # SIGKILL mid-run
        proc.wait()
        assert 0 < vendor.rows < LOCAL.queries.sum()
        r = fa.fisher_norm(http_model(vendor.url, cache=cache), X, method="exact")
    # the service's answers depend on its batch size in the last bits (BLAS blocking)
    assert np.allclose(r.value, LOCAL.value, rtol=1e-9)
    # every answer that reached the client was kept; only the one request in flight at the
    # kill (concurrency 1 × max_batch 2 rows) can have been answered and lost
    assert len(vendor.keys) - len(set(vendor.keys)) <= 2
