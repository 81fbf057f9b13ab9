"""Inputs/s per adapter on the same model (identical weights), same machine, one run.

    python benchmarks/adapters.py

Model: a 3×16×16 CNN with GELU/tanh and average pooling, C = 10, in torch, Keras (twin),
ONNX (exported from torch), a plain numpy callable (the torch model behind it) and an
HTTP service on 127.0.0.1 (same). White-box adapters run `exact` (1 forward + C vjps);
black-box ones run `sketch` at 201 calls per input and `exact` (2d + set-up calls).
"""

import os
import sys
import time
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from fimaudit_torch.testing import smooth_cnn  # noqa: E402

import fimaudit as fa  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main():
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    net = smooth_cnn().eval()
    x = np.random.default_rng(0).random((32, 3, 16, 16)).astype(np.float32)
    import copy

    truth = fa.fisher_norm(copy.deepcopy(net).double(), x.astype(np.float64)).value

    def service(b):
        with torch.no_grad():
            return torch.softmax(net(torch.as_tensor(np.asarray(b, np.float32))), 1).double().numpy()

    rows = []
    models = [("torch", fa.wrap(net), True)]
    try:
        from fimaudit_tensorflow.testing import smooth_cnn_twin

        models.append(("tensorflow", fa.wrap(smooth_cnn_twin(net)), True))
    except ImportError:
        pass
    try:
        models.append(("onnx", fa.wrap(fa.wrap(net, input_shape=(3, 16, 16)).to_onnx()), False))
    except ImportError:
        pass
    models.append(("callable", fa.wrap(service, input_shape=(3, 16, 16), output="probs", accepts="numpy"), False))
    vendor = None
    try:
        import fimaudit_http  # noqa: F401
        from fimaudit_http.testing import FakeVendor

        vendor = FakeVendor(service).__enter__()
        models.append(
            (
                "http (127.0.0.1)",
                fa.wrap(vendor.url, input_shape=(3, 16, 16), num_outputs=10, max_batch=1024, concurrency=4),
                False,
            )
        )
    except ImportError:
        pass
    for label, m, white in models:
        runs = [("exact", None)] if white else [("sketch", 201), ("exact", None)]
        for method, budget in runs:
            xs = x if method == "sketch" or white else x[:8]
            fa.fisher_norm(m, xs[:2], method=method, budget=budget)  # warm-up / tracing
            r, t = timed(lambda: fa.fisher_norm(m, xs, method=method, budget=budget))
            err = np.median(np.abs(r.value / truth[: len(xs)] - 1))
            rows.append((label, method, int(r.queries[0]), len(xs) / t, err))
    if vendor is not None:
        vendor.__exit__()
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}; model: 3×16×16 GELU CNN, C = 10")
    print("| adapter | method | calls per input | inputs/s | median rel. error vs torch float64 |")
    print("|---|---|---|---|---|")
    for label, method, calls, speed, err in rows:
        print(f"| {label} | {method} | {calls:,} | {speed:,.1f} | {err:.1e} |")


if __name__ == "__main__":
    main()
