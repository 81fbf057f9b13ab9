"""A model behind an HTTP prediction API (forward only; fimaudit differentiates it by
finite differences).

Each batch of at most ``max_batch`` rows is one POST of ``encode(batch)`` (default
``{"inputs": batch.tolist()}``) whose JSON answer ``decode(json)`` (default
``json["outputs"]``) holds one row of outputs per input. Requests run concurrently
(``concurrency``) on a pooled ``httpx.AsyncClient``, at most ``rate_limit`` per second.
429, 5xx, timeouts, dropped connections and unparsable (truncated) bodies are retried
with exponential backoff and jitter, honouring ``Retry-After``; any other 4xx fails at
once. Answered rows go to the SQLite ``cache`` before anything else happens, so no answer
that reached this process is paid for twice (a run killed mid-request can lose at most the
requests in flight: ``concurrency × max_batch`` rows); ``budget`` caps the rows actually sent over the network
(``QueryBudgetExceeded`` otherwise, with everything answered so far kept in the cache).
``log`` appends one JSON line per request: time, request hash, rows, status, latency,
retries — never headers or keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time

import httpx
import numpy as np

from fimaudit.blackbox import CallableModel
from fimaudit.blackbox.cache import QueryCache, row_keys
from fimaudit.errors import InvalidArgumentError, InvalidModelOutputError, QueryBudgetExceeded, ServiceError

RETRY_STATUS = {429, 500, 502, 503, 504}


def default_encode(batch):
    return {"inputs": batch.tolist()}


def default_decode(payload):
    return payload["outputs"]


class HTTPModel(CallableModel):
    def __init__(
        self,
        url,
        input_shape=None,
        num_outputs=None,
        *,
        encode=default_encode,
        decode=default_decode,
        output="probs",
        max_batch=64,
        concurrency=4,
        rate_limit=None,
        timeout=30.0,
        retries=5,
        backoff=0.5,
        max_backoff=30.0,
        headers=None,
        cache=None,
        log=None,
        budget=None,
        dtype=None,
        **options,
    ):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise InvalidArgumentError(f"max_batch must be a positive integer, got {max_batch!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be a positive integer, got {concurrency!r}")
        if rate_limit is not None and not rate_limit > 0:
            raise InvalidArgumentError(f"rate_limit must be > 0 requests per second, got {rate_limit!r}")
        super().__init__(
            self._query, input_shape=input_shape, num_outputs=num_outputs, output=output, accepts="numpy", **options
        )
        self.url = url
        self.encode, self.decode = encode, decode
        self.max_batch, self.concurrency, self.rate_limit = max_batch, concurrency, rate_limit
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, int(retries), backoff, max_backoff
        self._headers = dict(headers or {})  # never logged, never cached
        self.query_cache = QueryCache(cache) if cache is not None else None
        self.log_path = log
        self.budget = budget
        self.dtype = None if dtype is None else np.dtype(dtype)  # what rows are sent as
        self.sent = 0  # rows sent over the network (cache hits are free)
        self.requests = 0
        self._log_lock = threading.Lock()

    def __repr__(self):
        return f"HTTPModel({self.url!r}, input_shape={self.input_shape}, output={self.output!r})"

    # --- the callable fimaudit sees -------------------------------------------------
    def _query(self, batch):
        batch = np.ascontiguousarray(batch, dtype=self.dtype or batch.dtype)
        keys = row_keys(self.url, batch)
        answers = self.query_cache.get_many(keys) if self.query_cache is not None else {}
        missing = [i for i, k in enumerate(keys) if k not in answers]
        chunks = [missing[lo : lo + self.max_batch] for lo in range(0, len(missing), self.max_batch)]
        allowed = chunks
        if self.budget is not None:
            room = self.budget - self.sent
            allowed = []
            for c in chunks:
                if len(c) > room:
                    break
                allowed.append(c)
                room -= len(c)
        fetched = _run(self._fetch_all(batch, keys, allowed))
        answers.update(fetched)
        if len(allowed) < len(chunks):
            left = sum(len(c) for c in chunks[len(allowed) :])
            raise QueryBudgetExceeded(
                f"the query budget of {self.budget} rows is spent ({self.sent} sent); {left} rows of this batch "
                "were not sent. Answered rows are kept"
                + (f" in the cache {self.query_cache.path}" if self.query_cache else "")
                + ": raise budget= and run again to pay only for the rest",
                partial={"answered": len(answers), "missing": left},
            )
        return np.asarray([answers[k] for k in keys], dtype=np.float64)

    async def _fetch_all(self, batch, keys, chunks):
        if not chunks:
            return {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        gate = asyncio.Semaphore(self.concurrency)
        pace = _Pace(self.rate_limit)
        out = {}
        async with httpx.AsyncClient(limits=limits, timeout=self.timeout) as client:

            async def one(idx):
                async with gate:
                    rows = await self._request(client, pace, batch[idx])
                items = [(keys[i], list(map(float, r))) for i, r in zip(idx, rows)]
                if self.query_cache is not None:
                    self.query_cache.put_many(items)  # committed before anything else can fail
                out.update(items)

            await asyncio.gather(*(one(c) for c in chunks))
        return out

    async def _request(self, client, pace, rows):
        payload = self.encode(rows)
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        status, last = None, ""
        t0 = time.monotonic()
        for attempt in range(self.retries + 1):
            await pace.wait()
            delay = None
            try:
                resp = await client.post(self.url, json=payload, headers=self._headers)
                status = resp.status_code
                self.requests += 1
            except (httpx.TimeoutException, httpx.TransportError) as err:
                status, last = None, f"{type(err).__name__}"
            else:
                if status in RETRY_STATUS:
                    delay = _retry_after(resp.headers.get("Retry-After"))
                    last = f"HTTP {status}"
                elif 400 <= status < 500:
                    self._log(digest, len(rows), status, time.monotonic() - t0, attempt)
                    raise ServiceError(
                        f"{self.url} answered HTTP {status} ({resp.text[:200]!r}); a client error "
                        "is not retried: check the request format (encode=) and credentials",
                        status=status,
                    )
                elif status >= 300:
                    last = f"HTTP {status}"
                else:
                    try:
                        data = resp.json()
                    except ValueError:
                        last = "unparsable JSON body"  # truncated: worth another try
                    else:
                        self.sent += len(rows)
                        self._log(digest, len(rows), status, time.monotonic() - t0, attempt)
                        return self._decoded(data, len(rows))
            if attempt < self.retries:
                wait = delay if delay is not None else min(self.max_backoff, self.backoff * 2**attempt)
                await asyncio.sleep(wait * (1 + 0.1 * random.random()))
        self._log(digest, len(rows), status, time.monotonic() - t0, self.retries)
        if last == "unparsable JSON body":
            raise InvalidModelOutputError(f"{self.url} answered with a body that is not JSON, {self.retries + 1} times")
        raise ServiceError(
            f"{self.url} failed {self.retries + 1} times (last: {last}); raise retries= or timeout=, or try later",
            status=status,
        )

    def _decoded(self, data, m):
        try:
            rows = self.decode(data)
        except (KeyError, IndexError, TypeError) as err:
            raise InvalidModelOutputError(
                f"malformed response from {self.url}: decode() failed with {type(err).__name__}: {err}; "
                "pass decode= to read the outputs from its JSON"
            ) from None
        arr = np.asarray(rows, dtype=np.float64) if _rectangular(rows) else None
        if arr is None or arr.ndim != 2 or arr.shape[0] != m:
            shape = None if arr is None else arr.shape
            raise InvalidModelOutputError(
                f"{self.url} answered a batch of {m} inputs with outputs of shape {shape}; expected ({m}, C)"
            )
        return arr

    def _log(self, digest, rows, status, latency, retries):
        if self.log_path is None:
            return
        line = json.dumps(
            dict(
                time=time.time(), request=digest, rows=rows, status=status, latency_s=round(latency, 4), retries=retries
            )
        )
        with self._log_lock, open(self.log_path, "a") as f:
            f.write(line + "\n")


def _rectangular(rows):
    try:
        np.asarray(rows, dtype=np.float64)
        return True
    except (ValueError, TypeError):
        return False


def _retry_after(value):
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to exponential backoff


class _Pace:
    """At most ``rate`` request starts per second."""

    def __init__(self, rate):
        self.gap = 0.0 if rate is None else 1.0 / rate
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self):
        if not self.gap:
            return
        async with self.lock:
            now = time.monotonic()
            if self.next > now:
                await asyncio.sleep(self.next - now)
            self.next = max(now, self.next) + self.gap


def _run(coro):
    """Run a coroutine to completion, also from inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
