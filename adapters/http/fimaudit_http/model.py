"""A model behind an HTTP prediction API (forward only; fimaudit differentiates it by
finite differences).

Each batch of at most ``max_batch`` rows is one POST of ``encode(batch)`` whose JSON answer
``decode(json)`` holds one row of outputs per input; ``protocol=`` picks the pair of a serving
stack (:mod:`~fimaudit_http.protocols`: ``"default"``, ``"open-inference"``, ``"kserve-v1"``,
``"mlflow"``), and ``encode=``/``decode=`` given by the caller win over it. Requests run
concurrently (``concurrency``) on a pooled ``httpx.AsyncClient`` — or on the caller's own
(``client=``: its auth, proxies, certificates; the deadline, size cap and row cap still hold
around it, and its header values are redacted too) — at most ``rate_limit`` per second, each
attempt under one deadline (:mod:`~fimaudit_http.request`) and a size cap on its answer
(:mod:`~fimaudit_http.body`). 429, 5xx, timeouts, dropped connections and unparsable
(truncated) bodies are retried with exponential backoff and jitter, or after the
``Retry-After`` the service asks for (:mod:`~fimaudit_http.retry`) when that is at most
``max_retry_wait``; a longer ask, an answer over ``max_response_bytes`` and any other 4xx fail
at once; an error answer's JSON message (``error``, ``message``, ``detail``) is shown first.
A 413, or a second 504 in a row, for a batch of several rows sends its two halves instead.
Answered rows go to the SQLite ``cache`` (keyed by ``cache_key`` when given, else by the URL:
a retrained model behind the same URL needs a new key) as each request returns, so no answer that
reached this process is paid for twice (a run killed mid-request can lose at most the
requests in flight: ``concurrency × max_batch`` rows). ``max_rows_sent`` caps the rows sent
over the model's life, every send charged before it is made (:mod:`~fimaudit_http.ledger`);
``QueryBudgetExceeded`` otherwise, with everything answered so far kept in the cache. After
the first failure no new request starts; those in flight finish and are kept. ``log``
appends one JSON line per request: time, request hash, rows, status, latency, retries —
never headers or keys; every message is redacted (:mod:`~fimaudit_http.redact`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time

import httpx
import numpy as np

from fimaudit.blackbox import CallableModel
from fimaudit.blackbox.cache import QueryCache, row_keys
from fimaudit.errors import InvalidArgumentError, InvalidModelOutputError, QueryBudgetExceeded, ServiceError

from .body import ACCEPT_ENCODING, BodyTooLarge, UnsupportedCoding, excerpt
from .ledger import RowLedger
from .outputs import json_body, read_outputs, server_message
from .params import check_client, check_headers, check_url, client_secrets, count, preset, rows_cap, seconds
from .protocols import default_decode, default_encode
from .redact import Redactor
from .request import exchange
from .retry import backoff_wait, retry_after
from .rounds import Pace, Round, loop_for, run_coroutine

RETRY_STATUS = {429, 500, 502, 503, 504}
PRESET = object()  # encode=/decode= not given: the protocol's
__all__ = ["HTTPModel", "default_decode", "default_encode"]


class HTTPModel(CallableModel):
    def __init__(
        self,
        url,
        input_shape=None,
        num_outputs=None,
        *,
        encode=PRESET,
        decode=PRESET,
        protocol="default",
        input_name=None,
        output_name=None,
        client=None,
        output="probs",
        max_batch=64,
        concurrency=4,
        rate_limit=None,
        timeout=30.0,
        retries=5,
        backoff=0.5,
        max_backoff=30.0,
        max_retry_wait=60.0,
        max_response_bytes=64 << 20,
        max_rows_sent=None,
        headers=None,
        cache=None,
        log=None,
        budget=None,
        dtype=None,
        **options,
    ):
        self.url = check_url(url)
        self._headers = check_headers(headers)  # never logged, never cached
        self.client = check_client(client)
        self._redact = Redactor(url, {**client_secrets(client), **self._headers})
        self.max_batch = count("max_batch", max_batch, least=1)
        self.concurrency = count("concurrency", concurrency, least=1)
        self.rate_limit = (
            None if rate_limit is None else seconds("rate_limit", rate_limit, positive=True, unit="requests per second")
        )
        self.timeout = seconds("timeout", timeout, positive=True)
        self.retries = count("retries", retries)
        self.backoff, self.max_backoff = seconds("backoff", backoff), seconds("max_backoff", max_backoff)
        self.max_retry_wait = seconds("max_retry_wait", max_retry_wait)
        self.max_response_bytes = count("max_response_bytes", max_response_bytes, least=1)
        self.max_rows_sent = count("max_rows_sent", rows_cap(max_rows_sent, budget), none=True)
        chosen = preset(protocol, input_name, output_name)
        encode, decode = (
            (chosen.encode if encode is PRESET else encode),
            (chosen.decode if decode is PRESET else decode),
        )
        if not (callable(encode) and callable(decode)):
            raise InvalidArgumentError("encode= and decode= must be callables (batch -> JSON, JSON -> rows)")
        self.protocol = chosen.name
        super().__init__(
            self._query, input_shape=input_shape, num_outputs=num_outputs, output=output, accepts="numpy", **options
        )
        self.encode, self.decode = encode, decode
        self._send_headers = dict(self._headers)
        for name, value in (("Content-Type", "application/json"), ("Accept-Encoding", ACCEPT_ENCODING)):
            if not any(k.lower() == name.lower() for k in self._headers):
                self._send_headers[name] = value  # Accept-Encoding: the codings body.py decodes
        self.query_cache = QueryCache(cache) if cache is not None else None
        self.log_path = log
        self.ledger = RowLedger(self.max_rows_sent)
        self.dtype = None if dtype is None else np.dtype(dtype)  # what rows are sent as
        self.requests = 0  # answers received (any status)
        self._log_lock = threading.Lock()
        self._tls = None  # the TLS context every round's client shares

    @property
    def sent(self):
        """Rows sent over the network so far, every resend included (cache hits are free)."""
        return self.ledger.sent

    def __repr__(self):
        return f"HTTPModel({self._redact.url!r}, input_shape={self.input_shape}, output={self.output!r})"

    # --- the callable fimaudit sees -------------------------------------------------
    def _query(self, batch):
        try:
            return self._answers(batch)
        except Exception as err:
            self._redact.scrub(err)  # every message leaving the plugin is redacted here
            raise

    def _answers(self, batch):
        batch = np.ascontiguousarray(batch, dtype=self.dtype or batch.dtype)
        keys = row_keys(self.identity or self.url, batch)  # cache_key= names the model behind the URL
        answers = self.query_cache.get_many(keys) if self.query_cache is not None else {}
        missing = [i for i, k in enumerate(keys) if k not in answers]
        chunks = [missing[lo : lo + self.max_batch] for lo in range(0, len(missing), self.max_batch)]
        if chunks:
            rnd = Round(batch, keys, answers, self.query_cache)
            if self.client is None:
                run_coroutine(self._fetch_all(rnd, chunks))
            else:
                loop_for(self.client).run(self._fetch_all(rnd, chunks))
            if rnd.failure is not None:
                raise rnd.failure
            if rnd.refused:
                left = len(keys) - len(answers)
                raise QueryBudgetExceeded(
                    f"max_rows_sent={self.max_rows_sent} rows is spent ({self.sent} sent, resent rows included); "
                    f"{left} rows of this batch have no answer. Answered rows are kept"
                    + (f" in the cache {self.query_cache.path}" if self.query_cache else "")
                    + ": raise max_rows_sent= and run again to pay only for the rest",
                    partial={"answered": len(answers), "missing": left},
                )
        return np.asarray([answers[k] for k in keys], dtype=np.float64)

    async def _fetch_all(self, rnd, chunks):
        gate = asyncio.Semaphore(self.concurrency)
        rnd.pace = Pace(self.rate_limit)

        async def one(idx):
            async with gate:
                await rnd.guard(self._send(rnd, idx))

        if self.client is not None:  # the caller's: used, never closed
            rnd.client = self.client
            return await asyncio.gather(*(one(c) for c in chunks))
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        if self._tls is None:  # built once: building one costs more than a fast request
            self._tls = httpx.create_ssl_context()
        async with httpx.AsyncClient(limits=limits, timeout=self.timeout, verify=self._tls) as client:
            rnd.client = client
            await asyncio.gather(*(one(c) for c in chunks))

    async def _send(self, rnd, idx):
        """Send rows ``idx`` of the round until answered, split, refused or failed."""
        n = len(idx)
        content = json_body(self.encode(rnd.batch[idx]))  # once for every try
        digest = hashlib.sha256(content).hexdigest()[:16] if self.log_path is not None else None
        t0, status, last, gateway = time.monotonic(), None, "", 0
        for attempt in range(self.retries + 1):
            await rnd.pace.wait()
            rnd.admit(self.ledger, n)  # charged before it is sent; halts after an earlier failure
            try:
                ans = await exchange(
                    rnd.client, self.url, content, self._send_headers, self.timeout, self.max_response_bytes
                )
            except BodyTooLarge:
                self._log(digest, n, None, t0, attempt)
                raise ServiceError(
                    f"{self._redact.url} answered with more than max_response_bytes={self.max_response_bytes} "
                    "bytes (after decompression); reading stopped there. Raise max_response_bytes= if its answers "
                    "are that large",
                ) from None
            except UnsupportedCoding as err:
                self._log(digest, n, None, t0, attempt)
                raise ServiceError(
                    f"{self._redact.url} answered in {err}: do not set Accept-Encoding in headers="
                ) from None
            status, delay = ans.status, None
            self.requests += status is not None
            gateway = gateway + 1 if status == 504 else 0
            if ans.failure is not None:
                last = ans.failure
            elif 200 <= status < 300:
                try:
                    data = json.loads(ans.body)
                except ValueError:
                    last = "unparsable JSON body"  # truncated: worth another try
                except RecursionError:
                    raise InvalidModelOutputError(f"{self._redact.url} answered with JSON nested too deeply") from None
                else:
                    self._log(digest, n, status, t0, attempt)
                    return rnd.deliver(idx, read_outputs(self.decode, data, n, self._redact.url))
            elif n > 1 and (status == 413 or gateway >= 2):  # the batch is too large for the service
                self._log(digest, n, status, t0, attempt)
                await self._send(rnd, idx[: n // 2])
                return await self._send(rnd, idx[n // 2 :])
            elif status in RETRY_STATUS:
                last = f"HTTP {status}{self._shown(ans)}"
                value = ans.headers.get("retry-after")
                delay = retry_after(value, ans.headers.get("date"))
                if delay is not None and delay > self.max_retry_wait and attempt < self.retries:
                    self._log(digest, n, status, t0, attempt)
                    raise ServiceError(
                        f"{self._redact.url} answered HTTP {status} asking to retry after {delay:.6g} s "
                        f"(Retry-After: {value[:60]!r}), longer than max_retry_wait={self.max_retry_wait:g} s: pass a "
                        "larger max_retry_wait= to wait that long, or try later",
                        status=status,
                    )
            elif 400 <= status < 500:
                self._log(digest, n, status, t0, attempt)
                raise ServiceError(
                    f"{self._redact.url} answered HTTP {status}{self._shown(ans)}; a client error is not retried: "
                    "check the request format (protocol= or encode=), its size (max_batch=) and credentials",
                    status=status,
                )
            else:
                last = f"HTTP {status}{self._shown(ans)}"
            if attempt < self.retries:
                if delay is None:
                    delay = backoff_wait(attempt, self.backoff, self.max_backoff)
                await asyncio.sleep(min(delay, self.max_retry_wait))
        self._log(digest, n, status, t0, self.retries)
        if last == "unparsable JSON body":
            raise InvalidModelOutputError(
                f"{self._redact.url} answered with a body that is not JSON, {self.retries + 1} times"
            )
        raise ServiceError(
            f"{self._redact.url} failed {self.retries + 1} times (last: {last}); raise retries= or timeout=, "
            "or try later",
            status=status,
        )

    def _shown(self, ans):
        """The server's message and the head and tail of an answer's body, redacted, for a message."""
        said = None if ans.cut else server_message(ans.body)
        text = ans.body.decode("utf-8", "replace")
        text = self._redact.cut(text) + " …[cut]" if ans.cut else self._redact(text)
        if said and len(text) <= len(said) + 40:  # the body says no more than its message
            return f": {self._redact(said)!r}"
        head = f": {self._redact(said)!r}" if said else ""
        return head + (f" ({excerpt(text)!r})" if text else "")

    def _log(self, digest, rows, status, t0, retries):
        if self.log_path is None:
            return
        latency = round(time.monotonic() - t0, 4)
        entry = dict(time=time.time(), request=digest, rows=rows, status=status, latency_s=latency, retries=retries)
        with self._log_lock, open(self.log_path, "a") as f:
            f.write(self._redact(json.dumps(entry)) + "\n")
