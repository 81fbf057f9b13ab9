"""Local servers (127.0.0.1, random port) that speak the REST formats of common serving stacks,
written from their published specifications, and validate every request strictly:

- ``"open-inference"`` (KServe V2 / Triton): POST ``/v2/models/{name}/infer`` with
  ``{"inputs": [{"name", "shape", "datatype", "data"}]}``, ``data`` flat row-major and
  ``len(data) == prod(shape)``; answers ``{"model_name", "outputs": [{"name", "shape",
  "datatype", "data"}]}``; errors are ``{"error": "..."}``.
- ``"kserve-v1"`` (TF-Serving row format): POST ``/v1/models/{name}:predict`` with
  ``{"instances": rows}``; answers ``{"predictions": rows}``; errors ``{"error": "..."}``.
- ``"mlflow"``: POST ``/invocations`` with ``{"inputs": tensor}``; answers
  ``{"predictions": rows}``; errors ``{"error_code": "BAD_REQUEST", "message": "..."}``.

``predict(x)`` computes the outputs of a batch (float64). ``token``: requests without the
header ``Authorization: Bearer <token>`` get 401. The server counts requests and rows, and
keeps every request's headers. Serves until the ``with`` block ends.
"""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler

import numpy as np
from fimaudit_http.testing import LocalServer

PATHS = {
    "open-inference": "/v2/models/{name}/infer",
    "kserve-v1": "/v1/models/{name}:predict",
    "mlflow": "/invocations",
}
NUMPY = {"FP32": np.float32, "FP64": np.float64}


class BadRequest(Exception):
    pass


class ServingStack(LocalServer):
    def __init__(self, kind, predict, input_shape, *, name="clf", datatype="FP64", token=None, input_name="input-0"):
        self.kind, self.predict, self.input_shape, self.input_name = kind, predict, tuple(input_shape), input_name
        self.name, self.datatype, self.token = name, datatype, token
        self.path = PATHS[kind].format(name=name)
        self.lock = threading.Lock()
        self.requests = self.rows = 0
        self.headers_seen = []
        stack = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with stack.lock:
                    stack.requests += 1
                    stack.headers_seen.append(dict(self.headers))
                code, payload = stack.answer(self.path, dict(self.headers), body)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._listen(Handler, self.path)

    # --- one request ---------------------------------------------------------------------------
    def answer(self, path, headers, body):
        if path != self.path:
            return 404, self.error(f"no route {path}")
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, self.error("missing or invalid bearer token")
        if not headers.get("Content-Type", "").startswith("application/json"):
            return 415, self.error("Content-Type must be application/json")
        try:
            request = json.loads(body)
            x = getattr(self, "read_" + self.kind.replace("-", "_"))(request)
        except (ValueError, TypeError, KeyError, BadRequest) as err:
            return 400, self.error(f"invalid request: {err}")
        out = self.predict(x)
        with self.lock:
            self.rows += len(x)
        return 200, getattr(self, "write_" + self.kind.replace("-", "_"))(out)

    def error(self, message):
        if self.kind == "mlflow":
            return {"error_code": "BAD_REQUEST", "message": message}
        return {"error": message}

    def rows_of(self, rows):
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim < 1 or x.shape[1:] != self.input_shape:
            raise BadRequest(f"expected rows of shape {list(self.input_shape)}, got a tensor of shape {list(x.shape)}")
        return x

    # --- Open Inference Protocol ---------------------------------------------------------------
    def read_open_inference(self, request):
        if set(request) - {"id", "parameters", "inputs", "outputs"} or not isinstance(request.get("inputs"), list):
            raise BadRequest(f"unexpected request keys {sorted(request)}")
        if len(request["inputs"]) != 1:
            raise BadRequest(f"model {self.name} has 1 input, got {len(request['inputs'])}")
        tensor = request["inputs"][0]
        if set(tensor) - {"name", "shape", "datatype", "parameters", "data"} or "data" not in tensor:
            raise BadRequest(f"unexpected input tensor keys {sorted(tensor)}")
        if tensor["name"] != self.input_name:
            raise BadRequest(f"unexpected inference input {tensor['name']!r} for model {self.name}")
        if tensor["datatype"] != self.datatype:
            raise BadRequest(f"input-0 has datatype {tensor['datatype']}, model {self.name} expects {self.datatype}")
        shape, data = tensor["shape"], tensor["data"]
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise BadRequest(f"shape must be a list of non-negative integers, got {shape!r}")
        if not (isinstance(data, list) and all(isinstance(v, (int, float)) for v in data)):
            raise BadRequest("data must be a flat list of numbers (row-major)")
        if len(data) != math.prod(shape):
            raise BadRequest(f"data has {len(data)} elements, shape {shape} needs {math.prod(shape)}")
        flat = np.asarray(data, dtype=NUMPY[self.datatype])  # the server holds the declared datatype
        return self.rows_of(flat.astype(np.float64).reshape(shape))

    def write_open_inference(self, out):
        flat = out.astype(NUMPY[self.datatype]).reshape(-1).tolist()
        tensor = {"name": "output-0", "shape": list(out.shape), "datatype": self.datatype, "data": flat}
        return {"model_name": self.name, "model_version": "1", "outputs": [tensor]}

    # --- KServe V1 / TF-Serving ----------------------------------------------------------------
    def read_kserve_v1(self, request):
        if set(request) != {"instances"}:
            raise BadRequest(f"expected {{'instances': [...]}}, got keys {sorted(request)}")
        return self.rows_of(request["instances"])

    def write_kserve_v1(self, out):
        return {"predictions": out.tolist()}

    # --- MLflow scoring server -----------------------------------------------------------------
    def read_mlflow(self, request):
        if set(request) - {"inputs", "params"} or "inputs" not in request:
            raise BadRequest(f"expected {{'inputs': tensor}}, got keys {sorted(request)}")
        return self.rows_of(request["inputs"])

    def write_mlflow(self, out):
        return {"predictions": out.tolist()}
