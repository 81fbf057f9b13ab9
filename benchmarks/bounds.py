"""Certified bounds against measured Lipschitz constants, per architecture, one run.

    python benchmarks/bounds.py

For VGG-, ResNet- and DenseNet-style torch models at 3×32×32 (C = 10), exported to ONNX:
the certified bound on the logit Lipschitz constant L (fimaudit.lipschitz_bound); the best
measured lower bound, max ‖J(x)‖₂ over random inputs and an ascent on it; their ratio
(tightness); and the naive product of reshaped-kernel norms — not a bound for
convolutions — for comparison. Architectures are ranked by the certified bound.

A ViT-style model (LayerNorm, softmax attention) has no global constant: it is bounded on
declared input boxes — the whole image range [0, 1], and boxes of radius 0.01, 0.001 and 0.0001
around one input — against the largest ‖J(x)‖₂ measured inside each box.

The ImageNet architecture graphs the onnx package ships (``onnx/backend/test/data/light``, at
3×224×224, weights from ConstantOfShape generators) are bounded by this revision and, in a
subprocess capped at BEFORE_CAP CPU seconds, by the revision before the Gram-iteration conv norm
(BASELINE, per-frequency SVD on the whole FFT grid; "> N" when it did not finish), in CPU
seconds of each process (the machine is shared: wall seconds depend on its load). Each bound
is set against the largest secant slope ‖z(x + δ) − z(x)‖ / ‖δ‖ of the logits z measured with
onnxruntime (float32; its Conv has no float64 kernel) over a few random pairs.

    python benchmarks/bounds.py [--graphs-only]
"""

import copy
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from fimaudit_torch.testing import (  # noqa: E402
    SmallViT,
    densenet_style,
    resnet_style,
    vgg_style,
    worst_jacobian_norm_in_box,  # noqa: E402
)

import fimaudit as fa  # noqa: E402


def naive_product(net):
    """∏ ‖W reshaped to (c_out, rest)‖₂ over conv/linear layers (BN scales folded in as max |γ/σ|)."""
    out = 1.0
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            out *= float(np.linalg.norm(m.weight.detach().double().reshape(m.weight.shape[0], -1).numpy(), 2))
        elif isinstance(m, torch.nn.BatchNorm2d):
            out *= float((m.weight / torch.sqrt(m.running_var + m.eps)).abs().max())
    return out


def measured(net, n=20, steps=20, seed=0):
    net64 = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(seed)

    def jnorm(x, graph=False):
        J = torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], x, create_graph=graph).reshape(10, -1)
        return torch.linalg.matrix_norm(J, 2)

    pts = [torch.rand(3, 32, 32, generator=g, dtype=torch.float64) for _ in range(n // 2)] + [
        3 * torch.randn(3, 32, 32, generator=g, dtype=torch.float64) for _ in range(n // 2)
    ]
    best = max(jnorm(p).item() for p in pts)
    x = pts[0].clone()
    for _ in range(steps):
        x.requires_grad_(True)
        s = jnorm(x, graph=True)
        (gx,) = torch.autograd.grad(s, x, allow_unused=True)
        x = (x + 0.05 * (gx if gx is not None else torch.randn_like(x)).sign()).detach()
        best = max(best, jnorm(x).item())
    return best


BASELINE = "9af58d95"  # per-frequency SVD conv norm, no LRN rule
BEFORE_CAP = 60  # CPU seconds
GRAPHS = [
    "squeezenet",
    "shufflenet",
    "resnet50",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "bvlc_alexnet",
    "zfnet512",
    "vgg19",
]
BEFORE = GRAPHS[:5]  # the earlier revision on the others (large Gemm SVDs) is left out: it only takes longer
TIMED = """
import sys, time
import fimaudit as fa
t, c = time.perf_counter(), time.process_time()
try:
    b = fa.lipschitz_bound(sys.argv[1])
    out = f"ok {b.lipschitz!r}"
except Exception as err:
    out = f"refused {type(err).__name__}: {err}"
print(f"{time.process_time() - c:.1f} {time.perf_counter() - t:.1f} {out}")
"""


def light(name):
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")


def timed(path, tree, cap=None):
    """(CPU seconds, wall seconds, bound or the error's name) of fimaudit from ``tree`` on
    ``path``, in a subprocess killed after ``cap`` CPU seconds."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_CPU, (cap, cap))

    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run(
        [sys.executable, "-c", TIMED, path], env=env, capture_output=True, text=True, preexec_fn=limit if cap else None
    )
    if out.returncode != 0 or not out.stdout.strip():
        return f"> {cap}", "", "no bound"
    cpu, wall, kind, rest = out.stdout.strip().splitlines()[-1].split(" ", 3)
    return cpu, wall, (f"{float(rest):.4g}" if kind == "ok" else rest.split(":")[0])


def secant(path, logits, pairs=4, seed=0):
    """max ‖z(x + δ) − z(x)‖₂ / ‖δ‖₂ over random x ∈ [0, 1]^n and δ of norm 1e-2 ‖x‖."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(path)
    if logits not in [o.name for o in m.graph.output]:
        m.graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    rng = np.random.default_rng(seed)
    best = 0.0
    for _ in range(pairs):
        x = rng.random((1, 3, 224, 224))
        d = rng.standard_normal(x.shape)
        d *= 1e-2 * np.linalg.norm(x) / np.linalg.norm(d)
        za, zb = (sess.run([logits], {inp.name: v.astype(np.float32)})[0].astype(np.float64) for v in (x, x + d))
        best = max(best, float(np.linalg.norm(zb - za) / np.linalg.norm(d)))
    return best


def graphs(workers=4):
    """Both revisions on every graph, ``workers`` subprocesses at a time (CPU seconds are
    per process, so running them side by side does not change them); a row is printed as
    soon as both of its runs are done."""
    from concurrent.futures import ThreadPoolExecutor

    import onnx

    from fimaudit.bounds.graph import Graph

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"onnx light_* graphs at 3×224×224, {os.cpu_count()} shared CPU cores (load average {load} at the start)")
    print(
        f"| graph | CPU s before ({BASELINE}) | bound before | CPU s now | wall s now | certified L now "
        "| max secant slope (onnxruntime) | bound / secant |"
    )
    print("|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "-C", ROOT, "archive", BASELINE, "fimaudit"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        with ThreadPoolExecutor(workers) as pool:
            jobs = [
                (
                    n,
                    pool.submit(timed, light(n), ROOT),
                    pool.submit(timed, light(n), tree, BEFORE_CAP) if n in BEFORE else None,
                )
                for n in GRAPHS
            ]
            for name, now, old in jobs:
                cpu, wall, val = now.result()
                ocpu, _, oval = old.result() if old is not None else ("not run", "", "")
                try:
                    low = secant(light(name), Graph(onnx.load(light(name))).output)
                    ratio = f"{float(val) / low:.3g}×" if low > 0 else "(constant logits)"
                except ValueError:  # no bound to compare
                    low, ratio = float("nan"), ""
                row = (name, ocpu, oval, cpu, wall, val, f"{low:.4g}", ratio)
                print("| " + " | ".join(row) + " |", flush=True)


def main():
    warnings.simplefilter("ignore")
    if "--graphs-only" in sys.argv:
        return graphs()
    rows = []
    for name, make in [("VGG-style", vgg_style), ("ResNet-style", resnet_style), ("DenseNet-style", densenet_style)]:
        torch.manual_seed(0)
        net = make().eval()
        b = fa.lipschitz_bound(fa.wrap(net, input_shape=(3, 32, 32)))
        low = measured(net)
        rows.append((name, b.lipschitz, low, naive_product(net), b.fisher_bound))
    torch.manual_seed(0)
    vit = SmallViT(image=32, patch=8, depth=1).eval()
    proto = fa.wrap(vit, input_shape=(3, 32, 32)).to_onnx()
    x0 = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for label, r in (("[0, 1]", None), ("x ± 0.01", 0.01), ("x ± 0.001", 0.001), ("x ± 0.0001", 1e-4)):
        lo, hi = (
            (torch.zeros_like(x0), torch.ones_like(x0)) if r is None else ((x0 - r).clamp(0, 1), (x0 + r).clamp(0, 1))
        )
        b = fa.lipschitz_bound(proto, input_shape=(3, 32, 32), input_domain=(lo.numpy(), hi.numpy()))
        low = worst_jacobian_norm_in_box(vit, lo, hi, starts=6, steps=10)
        rows.append((f"ViT-style on {label}", b.lipschitz, low, float("nan"), b.fisher_bound))
    print(f"torch {torch.__version__}; random-init models at 3×32×32, C = 10")
    print(
        "| model | certified L | measured max ‖J(x)‖₂ | tightness (bound / measured) "
        "| naive ∏‖W‖ (not a bound) | ½L² (λ_max bound) |"
    )
    print("|---|---|---|---|---|---|")
    for name, L, low, naive, fb in rows:
        print(f"| {name} | {L:.4g} | {low:.4g} | {L / low:.1f}× | {naive:.4g} | {fb:.4g} |")
    print("ranking by certified L: " + " < ".join(r[0] for r in sorted(rows[:3], key=lambda r: r[1])))
    print()
    graphs()


if __name__ == "__main__":
    main()
