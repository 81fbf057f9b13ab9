"""Real serving packages (MLflow, KServe, BentoML, LitServe) started as child processes on
127.0.0.1, each serving the same small numpy model, for the tests of test_serving_real.py.

Every server gets a free port, binds the loopback address only (checked in /proc/net/tcp before
any request is sent), is waited for at most ``START_S`` seconds, and is killed with its whole
process group when its ``with`` block ends, whatever happened. The model is a tanh MLP whose
weights the test and the server share through a .npz file: the server answers probabilities in
float64 (JSON numbers round-trip float64), so fimaudit-http's estimate can be compared with the
float64 autodiff of the same weights.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

START_S = 120  # the longest a server may take to answer its health check (MLflow: ~80 s on a busy 2-core machine)

MODEL = """
import numpy as np
_w = np.load({weights!r})
def probs(x):
    h = np.tanh(np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ _w["W0"].T + _w["b0"])
    z = h @ _w["W1"].T + _w["b1"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
"""

SERVERS = {
    # the MLflow scoring server, from a pyfunc model saved in the folder
    "mlflow": """
import mlflow.pyfunc, subprocess, sys
class Clf(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return probs(model_input)
mlflow.pyfunc.save_model({folder!r} + "/clf", python_model=Clf())
sys.exit(subprocess.call([sys.executable, "-m", "mlflow", "models", "serve", "-m", {folder!r} + "/clf",
                          "--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}", "-w", "1"]))
""",
    # KServe's model server, V1 protocol; its REST server has no host option, so uvicorn is told 127.0.0.1
    "kserve": """
import uvicorn, kserve
class Loopback(uvicorn.Config):
    def __init__(self, *a, **k):
        k["host"] = "127.0.0.1"
        super().__init__(*a, **k)
uvicorn.Config = Loopback
class Clf(kserve.Model):
    def __init__(self):
        super().__init__("clf")
        self.ready = True
    def predict(self, payload, headers=None, **kw):
        return {{"predictions": probs(payload["instances"]).tolist()}}
kserve.ModelServer(http_port={port}, enable_grpc=False, workers=1).start([Clf()])
""",
    # a BentoML 1.x service, served by `bentoml serve` from the folder
    "bentoml": """
import subprocess, sys
open({folder!r} + "/service.py", "w").write('''
import bentoml, numpy as np, sys
sys.path.insert(0, {folder!r})
from model import probs
@bentoml.service
class Clf:
    @bentoml.api
    def predict(self, inputs: list) -> dict:
        return {{"outputs": probs(np.asarray(inputs, dtype=np.float64)).tolist()}}
''')
sys.exit(subprocess.call([sys.executable, "-m", "bentoml", "serve", "service:Clf", "--host", "127.0.0.1",
                          "--port", "{port}", "--working-dir", {folder!r}]))
""",
    # LitServe, one thread-based API server
    "litserve": """
import litserve as ls
class Clf(ls.LitAPI):
    def setup(self, device):
        pass
    def decode_request(self, request):
        return request["inputs"]
    def predict(self, x):
        return probs(x)
    def encode_response(self, output):
        return {{"outputs": output.tolist()}}
if __name__ == "__main__":  # its workers are spawned processes that import this file
    ls.LitServer(Clf(), accelerator="cpu", workers_per_device=1).run(
        host="127.0.0.1", port={port}, generate_client_file=False, api_server_worker_type="thread", num_api_servers=1
    )
""",
}
# where the model answers, the health check, and fimaudit-http's protocol for it
ROUTES = {
    "mlflow": ("/invocations", "/ping", "mlflow"),
    "kserve": ("/v1/models/clf:predict", "/v1/models/clf", "kserve-v1"),
    "bentoml": ("/predict", "/readyz", "default"),
    "litserve": ("/predict", "/health", "default"),
}
PACKAGES = {"mlflow": "mlflow", "kserve": "kserve", "bentoml": "bentoml", "litserve": "litserve"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port):
    """The local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 as /proc writes them


class Served:
    """``kind``'s server in a child process running ``folder/server.py`` (its own session, so
    the whole group is killed)."""

    def __init__(self, kind, weights, folder):
        self.kind, self.port = kind, free_port()
        path, health, self.protocol = ROUTES[kind]
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.health = f"http://127.0.0.1:{self.port}{health}"
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "model.py"), "w") as f:
            f.write(MODEL.format(weights=str(weights)))
        script = f"import sys\nsys.path.insert(0, {str(folder)!r})\nfrom model import probs\n"
        script += textwrap.dedent(SERVERS[kind]).format(folder=str(folder), port=self.port)
        with open(os.path.join(folder, "server.py"), "w") as f:
            f.write(script)
        self.log = open(os.path.join(folder, "server.log"), "wb")
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"file://{folder}/mlruns", BENTOML_HOME=f"{folder}/bentoml")
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # the servers' own tools
        self.proc = subprocess.Popen(
            [sys.executable, "server.py"], cwd=folder, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env,
        )  # fmt: skip

    def __enter__(self):
        try:
            self._wait()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait(self):
        t0 = time.monotonic()
        deadline = t0 + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.health, timeout=2) as answer:
                    if answer.status == 200:
                        self.start_s = time.monotonic() - t0
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.kind} did not answer {self.health} within {START_S} s:\n{self.tail()}")

    def tail(self, n=3000):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read()[-n:].decode(errors="replace")

    def __exit__(self, *exc):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything the server left behind in its group
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.log.close()
