"""A real HTTP prediction service on 127.0.0.1 (random port) serving a numpy model, with
scripted faults. Bounded: it serves until stopped, and the tests stop it."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


class LocalServer:
    """An HTTP server on 127.0.0.1 (a free port) that serves ``handler`` from a daemon thread
    while its ``with`` block runs, and is shut down and joined when it ends."""

    def _listen(self, handler, path, poll_interval=0.5):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class FakeVendor(LocalServer):
    def __init__(self, predict, faults=()):
        self.predict = predict
        self.faults = list(faults)  # consumed one per request: "429", "500", "503", "slow", ...
        self.lock = threading.Lock()
        self.requests = 0
        self.rows = 0
        self.keys = []  # every row answered, as bytes, to detect a row paid twice
        self.headers_seen = []
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with vendor.lock:
                    vendor.requests += 1
                    fault = vendor.faults.pop(0) if vendor.faults else None
                    vendor.headers_seen.append(dict(self.headers))
                if fault == "429":
                    return self._send(429, b'{"error": "slow down"}', {"Retry-After": "0.05"})
                if fault in ("500", "502", "503"):
                    return self._send(int(fault), b"oops")
                if fault == "400":
                    return self._send(400, b'{"error": "bad request"}')
                if fault == "slow":
                    time.sleep(1.0)
                x = np.asarray(json.loads(body)["inputs"], dtype=np.float64)
                out = vendor.predict(x)
                if fault == "short":
                    out = out[:-1]
                payload = json.dumps({"outputs": out.tolist()}).encode()
                if fault == "truncated":
                    payload = payload[: len(payload) // 2]
                if fault == "malformed":
                    payload = b'{"predictions": []}'
                if fault not in ("truncated", "malformed", "short"):
                    with vendor.lock:
                        vendor.rows += len(x)
                        vendor.keys.extend(row.tobytes() for row in x)
                self._send(200, payload)

            def _send(self, code, payload, headers=None):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._listen(Handler, "/predict")
