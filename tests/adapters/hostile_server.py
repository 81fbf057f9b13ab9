"""A scriptable HTTP server on 127.0.0.1 (random port) that misbehaves on purpose: slow,
endless or compressed-bomb bodies, long Retry-After asks, echoes of the request, batch-size
refusals. ``respond(req)`` is called for each POST with a :class:`Request` and answers
through it. The server counts every request and every row it receives (``rows``: the length
of the JSON body's ``inputs``), answered or not. Every loop that writes stops when the
server is closed, after ``MAX_SECONDS``, or when the client hangs up; handler threads are
daemons."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

from fimaudit_http.testing import LocalServer

MAX_SECONDS = 20.0


class Request:
    def __init__(self, handler, server, body):
        self.handler, self.server, self.body = handler, server, body
        self.path = handler.path
        self.headers = dict(handler.headers)
        try:
            self.inputs = json.loads(body)["inputs"]
        except (ValueError, KeyError, TypeError):
            self.inputs = None
        self.number = 0  # the request's place in the server's order (0-based)

    # --- ways to answer ----------------------------------------------------------
    def send(self, code, body=b"", headers=None):
        """A complete answer with its Content-Length."""
        body = body.encode() if isinstance(body, str) else body
        self._head(code, {"Content-Length": str(len(body)), **(headers or {})})
        self._write(body)

    def outputs(self, rows, headers=None, encode=None):
        """200 with ``{"outputs": rows}``; ``encode`` (bytes → bytes) compresses it."""
        body = json.dumps({"outputs": rows}).encode()
        self.send(200, body if encode is None else encode(body), headers)

    def trickle(self, code, body, gap):
        """Headers at once, then the body one byte every ``gap`` seconds."""
        self._head(code, {"Content-Length": str(len(body)), "Connection": "close"})
        for i in range(len(body)):
            if not self._write(body[i : i + 1]) or self._expired(gap):
                return

    def endless(self, code, piece, headers=None):
        """A body without length, ``piece`` after ``piece`` until the client hangs up."""
        self._head(code, {"Connection": "close", **(headers or {})})
        while self._write(piece) and not self._expired(0):
            pass

    def stream(self, code, pieces, headers=None):
        """A body without length made of ``pieces`` (an iterable of bytes)."""
        self._head(code, {"Connection": "close", **(headers or {})})
        for piece in pieces:
            if not self._write(piece) or self._expired(0):
                return

    def hang_up(self):
        """Close the connection without an answer."""
        self.handler.close_connection = True

    # --- plumbing ------------------------------------------------------------------
    def _head(self, code, headers):
        try:
            self.handler.send_response_only(code)
            if "Date" not in headers:
                self.handler.send_header("Date", self.handler.date_time_string())
            self.handler.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.handler.send_header(k, v)
            self.handler.end_headers()
        except OSError:
            pass
        if headers.get("Connection") == "close":
            self.handler.close_connection = True

    def _write(self, data):
        try:
            self.handler.wfile.write(data)
            self.handler.wfile.flush()
            return True
        except OSError:
            return False

    def _expired(self, gap):
        stop = self.server.stopped
        return stop.wait(gap) if gap else stop.is_set() or time.monotonic() - self.server.started > MAX_SECONDS


class HostileServer(LocalServer):
    def __init__(self, respond):
        self.respond = respond
        self.lock = threading.Lock()
        self.requests = 0
        self.rows = 0
        self.sizes = []  # rows of each request, in order
        self.seen = []  # (path, headers, body) of each request
        self.stopped = threading.Event()
        self.started = time.monotonic()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = Request(self, owner, body)
                with owner.lock:
                    req.number = owner.requests
                    owner.requests += 1
                    n = len(req.inputs) if isinstance(req.inputs, list) else 0
                    owner.rows += n
                    owner.sizes.append(n)
                    owner.seen.append((req.path, req.headers, body))
                owner.respond(req)

        self._listen(Handler, "/predict", poll_interval=0.05)

    def __enter__(self):
        self.started = time.monotonic()
        return super().__enter__()

    def __exit__(self, *exc):
        self.stopped.set()
        super().__exit__(*exc)
