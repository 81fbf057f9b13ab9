"""White-box throughput and accuracy, fimaudit against the seed paper's method, one run.

    python benchmarks/whitebox.py [--quick] [--device cpu|cuda]

Prints, on this machine and in this run:
1. inputs/s of fimaudit's batched exact method and of the seed method on the same
   inputs (small CNN and ResNet-18 layout, 3×32×32, C = 10), and their max relative
   difference;
2. C = 1000: Lanczos error against exact after 5..40 steps (2 model products a step);
3. peak memory of exact and Lanczos as d grows (to show it is O(d), never O(d²)).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _models import seed_method  # noqa: E402
from fimaudit_torch.testing import cifar_cnn, resnet18  # noqa: E402

import fimaudit as fa  # noqa: E402


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return out, best


def throughput(device, quick):
    rows = []
    for name, make, n_seed in [("small CNN", cifar_cnn, 16), ("ResNet-18 (32×32)", resnet18, 4)]:
        torch.manual_seed(0)
        net = make().to(device).eval()
        x = torch.rand(64, 3, 32, 32, device=device)
        model = fa.wrap(net)
        fa.fisher_norm(model, x[:4], method="exact")  # warm-up
        r, t_fa = timed(lambda: fa.fisher_norm(model, x, method="exact"), repeat=1 if quick else 3)
        ns = n_seed if quick else 2 * n_seed
        ref, t_seed = timed(lambda: seed_method(net, x[:ns]))
        with torch.no_grad():
            _, t_fwd = timed(lambda: net(x), repeat=3)
        diff = ((r.value[:ns].double() - ref).abs() / ref.abs()).max().item()
        rows.append(
            dict(
                model=name,
                forward=64 / t_fwd,
                fimaudit=64 / t_fa,
                seed=ns / t_seed,
                speedup=(64 / t_fa) / (ns / t_seed),
                max_rel_diff=diff,
            )
        )
    return rows


def lanczos_c1000(device, quick):
    torch.manual_seed(0)
    net = cifar_cnn(C=1000).to(device).eval()
    n = 4 if quick else 8
    x = torch.rand(n, 3, 32, 32, device=device)
    exact, t_exact = timed(lambda: fa.fisher_norm(net, x, method="exact"))
    rows = []
    for steps in [5, 10, 15, 20, 30, 40]:
        r, t = timed(
            lambda: fa.fisher_norm(net, x, method="lanczos", max_steps=steps, tol=1e-12, on_nonconvergence="flag")
        )
        err = ((exact.value - r.value) / exact.value).max().item()
        rows.append(dict(steps=steps, products=2 * steps, max_rel_err=err, seconds=t, queries=int(r.queries[0])))
    auto, t_auto = timed(lambda: fa.fisher_norm(net, x, tol=1e-4))
    err_auto = ((exact.value - auto.value) / exact.value).max().item()
    return dict(
        n=n,
        exact_seconds=t_exact,
        exact_queries=int(exact.queries[0]),
        rows=rows,
        auto=dict(method=auto.method, steps=auto.steps.tolist(), max_rel_err=err_auto, seconds=t_auto),
    )


MEM_CHILD = """
import torch, fimaudit as fa
def status(key):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) / 1024
torch.manual_seed(0)
side, method = {side}, {method!r}
net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(8),
                          torch.nn.Flatten(), torch.nn.Linear(16 * 64, 10)).eval()
x = torch.rand(8, 3, side, side)
fa.fisher_norm(net, torch.rand(1, 3, 8, 8))  # warm up imports and the plugin
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM)
base = status('VmRSS')
if method == 'forward':
    with torch.no_grad():
        net(x)
else:
    fa.fisher_norm(net, x, method=method, return_direction=True)
print(status('VmHWM') - base)
"""


def memory():
    """Peak resident memory a fresh process adds during one call (VmHWM after a reset,
    minus the resident memory before it): a forward pass alone, then each estimator."""
    rows = []
    for side in [32, 64, 128]:
        d = 3 * side * side
        row = dict(d=d, dense_F_MB=d * d * 4 / 2**20)
        peak = {}
        for method in ["forward", "exact", "lanczos"]:
            code = MEM_CHILD.format(side=side, method=method)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            peak[method] = float(out.stdout.strip().splitlines()[-1])
        row.update(forward_MB=peak["forward"], exact_MB=peak["exact"], lanczos_MB=peak["lanczos"])
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    dev = args.device
    if dev == "cuda":  # both methods in full float32, as in the seed paper's measurements (TF32 would differ by ~1%)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_name() if dev == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {name}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}")

    tp = throughput(dev, args.quick)
    print(
        "\n| model (d, C) | forward inputs/s | seed method inputs/s | fimaudit exact inputs/s "
        "| speed-up | max rel. diff |"
    )
    print("|---|---|---|---|---|---|")
    for r in tp:
        print(
            f"| {r['model']} (3072, 10) | {r['forward']:,.0f} | {r['seed']:,.1f} | {r['fimaudit']:,.1f} "
            f"| {r['speedup']:.1f}× | {r['max_rel_diff']:.1e} |"
        )

    lz = lanczos_c1000(dev, args.quick)
    print(
        f"\nC = 1000 (small CNN, 3×32×32, {lz['n']} inputs): exact {lz['exact_seconds']:.2f} s, "
        f"{lz['exact_queries']} products per input"
    )
    print("| Lanczos steps | model products | max rel. error vs exact | seconds |")
    print("|---|---|---|---|")
    for r in lz["rows"]:
        print(f"| {r['steps']} | {r['products']} | {r['max_rel_err']:.1e} | {r['seconds']:.2f} |")
    a = lz["auto"]
    print(f"auto (tol=1e-4): {a['method']}, steps per input {a['steps']}, max rel. error {a['max_rel_err']:.1e}")

    mem = None
    if dev == "cpu":
        mem = memory()
        print("\n8 inputs, C = 10; peak memory added by one call (fresh process each):")
        print("| d | forward pass (MB) | exact + direction (MB) | Lanczos + direction (MB) | one dense d×d F (MB) |")
        print("|---|---|---|---|---|")
        for r in mem:
            print(
                f"| {r['d']:,} | {r['forward_MB']:.1f} | {r['exact_MB']:.1f} | {r['lanczos_MB']:.1f} "
                f"| {r['dense_F_MB']:,.0f} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=name, throughput=tp, lanczos=lz, memory=mem), f, indent=1)


if __name__ == "__main__":
    main()
