"""GPU checks in one run (for a machine with CUDA; CI never has one).

1. torch CUDA tensors in → CUDA tensors out for every estimator, same values as the CPU;
2. host↔device copies during a Lanczos run, counted with the torch profiler (only
   convergence flags may cross: a few bytes per step, never vectors);
3. CuPy arrays through the array-API core (a CuPy linear-softmax model): values match
   numpy and results stay CuPy;
4. exact on the GPU: vmap vs loop over classes, inputs/s.
"""

import json
import os
import sys
import time

import numpy as np
import torch

import fimaudit as fa
from fimaudit.models import Model
from fimaudit.testing import LinearModel

sys.path.insert(0, __file__.rsplit("/", 1)[0])
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from fimaudit_torch.testing import cifar_cnn, resnet18  # noqa: E402

assert torch.cuda.is_available(), "no CUDA device"
out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
print("device:", out["device"], "torch", torch.__version__)

# 1. devices
torch.manual_seed(0)
net = cifar_cnn().cuda().eval()
x = torch.rand(16, 3, 32, 32, device="cuda")
cpu_net = cifar_cnn().eval()
cpu_net.load_state_dict({k: v.cpu() for k, v in net.state_dict().items()})
ref = fa.fisher_norm(cpu_net, x.cpu()).value
checks = {}
for name, call in {
    "exact": lambda: fa.fisher_norm(net, x, method="exact", return_direction=True),
    "lanczos": lambda: fa.fisher_norm(net, x, method="lanczos", return_direction=True, tol=1e-5),
    "power": lambda: fa.fisher_norm(net, x, method="power", tol=1e-4, max_steps=2000, on_nonconvergence="flag"),
}.items():
    r = call()
    checks[name] = dict(
        device=str(r.value.device),
        rel_err_vs_cpu=float(((r.value.cpu() - ref) / ref).abs().max()),
        direction_device=str(r.direction.device) if r.direction is not None else None,
    )
t = fa.fisher_trace(net, x, method="hutchpp", k=9)
s = fa.fisher_spectrum(net, x, k=3, return_vectors=True)
checks["trace_device"], checks["spectrum_device"] = str(t.value.device), str(s.vectors.device)
out["devices"] = checks
print(json.dumps(checks, indent=1))

# 2. host-device traffic inside Lanczos
from torch.profiler import ProfilerActivity, profile  # noqa: E402

net1k = cifar_cnn(C=1000).cuda().eval()
x1k = torch.rand(8, 3, 32, 32, device="cuda")
fa.fisher_norm(net1k, x1k, method="lanczos", max_steps=5, on_nonconvergence="flag")
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    r = fa.fisher_norm(net1k, x1k, method="lanczos", tol=1e-4)
copies = [e for e in prof.events() if "Memcpy" in e.name and ("DtoH" in e.name or "HtoD" in e.name)]
out["lanczos_copies"] = dict(steps=int(r.steps.max()), count=len(copies), names=sorted({e.name for e in copies}))
print("Lanczos C=1000:", out["lanczos_copies"])

# 3. CuPy through the array-API core
try:
    import cupy as cp

    class CupyLinear(Model):
        def __init__(self, W):
            super().__init__(input_shape=(W.shape[1],), num_outputs=W.shape[0])
            self.W = W

        def forward(self, x):
            return x @ self.W.T

        def jvp(self, x, v):
            return v @ self.W.T

        def vjp(self, x, u):
            return u @ self.W

    rng = np.random.default_rng(0)
    W, xn = rng.standard_normal((12, 40)), rng.standard_normal((32, 40))
    rn = fa.fisher_norm(LinearModel(W), xn)
    results = {}
    for method in ["exact", "lanczos"]:
        rc = fa.fisher_norm(CupyLinear(cp.asarray(W)), cp.asarray(xn), method=method, tol=1e-10)
        results[method] = dict(
            type=type(rc.value).__module__, rel_err=float(np.max(np.abs(cp.asnumpy(rc.value) - rn.value) / rn.value))
        )
    tc = fa.fisher_trace(CupyLinear(cp.asarray(W)), cp.asarray(xn), method="hutchinson", k=64)
    results["hutchinson_type"] = type(tc.value).__module__
    # a CuPy black box: the callable takes and returns CuPy arrays; FD probes stay on the GPU
    Wc = cp.asarray(W)

    def cupy_service(b):
        z = b @ Wc.T
        e = cp.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    bbc = fa.wrap(cupy_service, input_shape=(40,), output="probs")
    for method in ["exact", "sketch"]:
        rb = fa.fisher_norm(bbc, cp.asarray(xn), method=method, budget=None if method == "exact" else 60)
        results["blackbox_" + method] = dict(
            type=type(rb.value).__module__, rel_err=float(np.max(np.abs(cp.asnumpy(rb.value) - rn.value) / rn.value))
        )
    # a kinked float32 ReLU network served in CuPy: kink repairs must stay on the GPU too
    from fimaudit.testing.kinked import kinked_relu_network

    fn_np, Xk, truth_k = kinked_relu_network(0)
    rng = np.random.default_rng(0)  # rebuild the same weights in CuPy
    d, hidden, C = 16, 64, 5
    W1 = rng.standard_normal((hidden, d)) / np.sqrt(d)
    W2 = rng.standard_normal((C, hidden)) / np.sqrt(hidden)
    x0 = rng.uniform(0.2, 0.8, d)
    b1 = -W1 @ x0 + np.where(np.arange(hidden) < 6, 3e-3, 0.5) * rng.standard_normal(hidden)
    W1c, W2c, b1c = (cp.asarray(a, dtype=cp.float32) for a in (W1, W2, b1))

    def relu_service(b):
        z = cp.maximum(b.astype(cp.float32) @ W1c.T + b1c, 0) @ W2c.T
        e = cp.exp((z - z.max(axis=1, keepdims=True)).astype(cp.float64))
        return (e / e.sum(axis=1, keepdims=True)).astype(cp.float32)

    bbk = fa.wrap(relu_service, input_shape=(d,), output="probs")
    rk = fa.fisher_norm(bbk, cp.asarray(Xk), method="exact")
    rn_k = fa.fisher_norm(fa.wrap(fn_np, input_shape=(d,), output="probs"), Xk, method="exact")
    vk = cp.asnumpy(rk.value)
    results["blackbox_relu_kinks"] = dict(
        type=type(rk.value).__module__,
        median_rel_err=float(np.median(np.abs(vk / truth_k - 1))),
        numpy_median_rel_err=float(np.median(np.abs(rn_k.value / truth_k - 1))),
        repaired_calls=int(np.sum(cp.asnumpy(cp.asarray(rk.queries))) - len(Xk) * (bbk.costs().setup + 2 * d)),
        coverage=float(np.mean((cp.asnumpy(rk.lower) <= truth_k) & (truth_k <= cp.asnumpy(rk.upper)))),
    )
    # the same network with the Gram extrapolated over kinks (columns at h and 2h): stays in CuPy
    rx = fa.fisher_norm(
        fa.wrap(relu_service, input_shape=(d,), output="probs", kinks="extrapolate"), cp.asarray(Xk), method="exact"
    )
    results["blackbox_relu_extrapolated"] = dict(
        type=type(rx.value).__module__,
        median_rel_err=float(np.median(np.abs(cp.asnumpy(rx.value) / truth_k - 1))),
        coverage=float(np.mean((cp.asnumpy(rx.lower) <= truth_k) & (truth_k <= cp.asnumpy(rx.upper)))),
    )
    out["cupy"] = results
except Exception as err:  # report, do not hide
    out["cupy"] = f"FAILED: {type(err).__name__}: {err}"
print("CuPy:", out["cupy"])

# 3b. a GPU-served float32 CNN as a black box, TF32 on and off
bb_rows = {}
torch.manual_seed(0)
net = cifar_cnn().cuda().eval()
xs = torch.rand(4, 3, 32, 32)
truth = fa.fisher_norm(fa.wrap(net, dtype=torch.float64), xs.double().cuda()).value.cpu().numpy()
for tf32 in [False, True]:

    def served(b, tf32=tf32):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(b).cuda()), 1).cpu().numpy()

    import warnings

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rb = fa.fisher_norm(
            fa.wrap(served, input_shape=(3, 32, 32), output="probs", accepts="numpy", batch_size=8192),
            xs.numpy(),
            method="exact",
        )
    bb_rows[f"tf32_{tf32}"] = dict(
        rel_err=np.abs(rb.value / truth - 1).round(5).tolist(),
        fd_noise=rb.fd_noise.tolist(),
        fd_step=rb.fd_step.tolist(),
        bracket_holds=bool(np.all((rb.lower <= truth) & (truth <= rb.upper))),
        noise_warning=any("noise" in str(x.message) for x in w),
    )
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
out["blackbox_gpu_served"] = bb_rows
print("black box served on the GPU:", json.dumps(bb_rows, indent=1))

# 4. exact throughput, vmap vs loop, and TF32 on vs off against float64
rows = []
torch.manual_seed(0)
net = cifar_cnn().cuda().eval()
xb = torch.rand(64, 3, 32, 32, device="cuda")
r64 = fa.fisher_norm(fa.wrap(net, dtype=torch.float64), xb.double()).value
for tf32 in [False, True]:
    v = fa.fisher_norm(fa.wrap(net, allow_tf32=tf32), xb).value.double()
    out[f"tf32_{tf32}_rel_err_vs_float64"] = float(((v - r64) / r64).abs().max())
print({k: v for k, v in out.items() if k.startswith("tf32")})
for name, make in [("small CNN", cifar_cnn), ("ResNet-18 (32x32)", resnet18)]:
    torch.manual_seed(0)
    net = make().cuda().eval()
    xb = torch.rand(256, 3, 32, 32, device="cuda")
    for vec in ["vmap", "loop"]:
        m = fa.wrap(net, vectorize=vec)
        fa.fisher_norm(m, xb[:8])
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fa.fisher_norm(m, xb)
        torch.cuda.synchronize()
        rows.append(dict(model=name, vectorize=vec, inputs_per_s=256 / (time.perf_counter() - t0)))
out["exact_throughput_batch256"] = rows
for r in rows:
    print(r)
with open(sys.argv[1] if len(sys.argv) > 1 else "gpu_check.json", "w") as f:
    json.dump(out, f, indent=1)
