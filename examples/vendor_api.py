"""Audit a model behind an HTTP prediction API, black box, with a query budget and a cache.

A fake vendor (a numpy model on 127.0.0.1, random port) is started by this example.

    python examples/vendor_api.py
"""

import json
import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

import fimaudit as fa

rng = np.random.default_rng(0)
W1, W2 = rng.standard_normal((12, 16)) / 3, rng.standard_normal((16, 4)) / 4


def predict(x):
    z = np.tanh(x @ W1) @ W2
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class Vendor(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        x = np.asarray(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["inputs"])
        body = json.dumps({"outputs": predict(x).tolist()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = ThreadingHTTPServer(("127.0.0.1", 0), Vendor)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}/predict"
cache = os.path.join(tempfile.mkdtemp(), "queries.sqlite")
try:
    model = fa.wrap(url, input_shape=(12,), num_outputs=4, cache=cache, headers={"Authorization": "Bearer demo"})
    x = rng.standard_normal((5, 12))
    print(fa.plan(model, x, budget=40))
    r = fa.fisher_norm(model, x, budget=40)
    print("sketch: lower", np.round(r.lower, 4), "estimate", np.round(r.value, 4), "calls per input", r.queries[0])
    exact = fa.fisher_norm(model, x, method="exact")
    print("exact:", np.round(exact.value, 4), "noise (nats):", exact.fd_noise[0])
finally:
    server.shutdown()
