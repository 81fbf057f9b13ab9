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
3×224×224), with their shipped weights (ConstantOfShape generators: every weight is 0.02, so
every kernel has rank one) and with random ones in their place (:func:`randomised`), are
bounded by this revision and, in a subprocess capped at CAP CPU seconds, by the revision before
(BASELINE: Gram iteration per frequency; "> N" when it did not finish), in CPU seconds of each
process (the machine is shared: wall seconds depend on its load). Each bound is set against the
largest secant slope ‖z(x + δ) − z(x)‖ / ‖δ‖ of the logits z measured with onnxruntime (float32;
its Conv has no float64 kernel) over a few random pairs, and so is the local bound
(fimaudit.local_bound) on the box of radius 1e-2 around one input in [0, 1], capped at CAP.

    python benchmarks/bounds.py [--models-only | --graphs-only [NAME ...] [--no-local]
                                 [--workers N] [--weights shipped,random]]
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


BASELINE = "0fa293ac"  # Gram iteration per frequency (up to 10 squarings), Gemm Gram matrices always formed
CAP = 20  # CPU seconds per subprocess: the revision before, and the local bound
CAP_NOW = 300  # CPU seconds for this revision's global bound
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
TIMED = """
import sys, time
import numpy as np
import fimaudit as fa
t, c = time.perf_counter(), time.process_time()
try:
    if sys.argv[2] == "global":
        out = f"ok {fa.lipschitz_bound(sys.argv[1]).lipschitz!r}"
    else:
        x = np.random.default_rng(0).random((1, 3, 224, 224)).astype(np.float32)
        lb = fa.local_bound(sys.argv[1], x, 1e-2, input_domain=(0.0, 1.0))
        out = f"ok {float(lb.lipschitz[0])!r}"
except Exception as err:
    out = f"refused {type(err).__name__}: {err}"
print(f"{time.process_time() - c:.1f} {time.perf_counter() - t:.1f} {out}")
"""


def light(name):
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")


def randomised(path, out, seed=0):
    """The graph with its ConstantOfShape weights (all 0.02 in the shipped files) replaced by
    random ones: He-normal Conv and Gemm weights, BatchNorm scale 1 ± 0.1, variance in
    [0.5, 1.5], small biases and means."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    use = {i: (n.op_type, k) for n in m.graph.node for k, i in enumerate(n.input)}
    keep, new = [], []
    for n in m.graph.node:
        if n.op_type != "ConstantOfShape":
            keep.append(n)
            continue
        shape = tuple(int(v) for v in inits[n.input[0]])
        op, k = use.get(n.output[0], ("", -1))
        if op in ("Conv", "Gemm") and k == 1:
            fan = int(np.prod(shape[1:])) if op == "Conv" else shape[-1]
            v = rng.standard_normal(shape) * np.sqrt(2.0 / fan)
        elif op == "BatchNormalization" and k in (1, 4):
            v = 1 + 0.1 * rng.standard_normal(shape) if k == 1 else rng.uniform(0.5, 1.5, shape)
        else:
            v = 0.01 * rng.standard_normal(shape)
        new.append(numpy_helper.from_array(v.astype(np.float32), n.output[0]))
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.graph.initializer.extend(new)
    m.ir_version = max(m.ir_version, 4)  # before IR 4 every initializer had to be a graph input too
    onnx.save(m, out)
    return out


def timed(path, tree, mode="global", cap=None):
    """(CPU seconds, wall seconds, value or the error's name) of fimaudit from ``tree`` on
    ``path``, in a subprocess killed after ``cap`` CPU seconds."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_CPU, (cap, cap))

    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run(
        [sys.executable, "-c", TIMED, path, mode],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=limit if cap else None,
    )
    if out.returncode != 0 or not out.stdout.strip():
        return f"> {cap}", "", "not finished"
    cpu, wall, kind, rest = out.stdout.strip().splitlines()[-1].split(" ", 3)
    if kind != "ok":  # the error's name and the node it names
        name, _, message = rest.partition(": ")
        return cpu, wall, f"refused: {name} ({message.split(':')[0]})"
    return cpu, wall, f"{float(rest):.4g}"


def logit_session(path, logits):
    """An onnxruntime session of the graph at ``path`` that also returns the tensor ``logits``."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(path)
    if logits not in [o.name for o in m.graph.output]:
        m.graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def secant(path, logits, pairs=4, seed=0):
    """max ‖z(x + δ) − z(x)‖₂ / ‖δ‖₂ over random x ∈ [0, 1]^n and δ of norm 1e-2 ‖x‖."""
    sess = logit_session(path, logits)
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


def ratio(a, b):
    if str(a).startswith("> "):  # a capped run: at least this much
        return f"> {ratio(a[2:], b)}" if ratio(a[2:], b) else ""
    try:
        return f"{float(a) / float(b):.3g}×" if float(b) > 0 else "(constant logits)"
    except ValueError:
        return ""


def graphs(workers=3, names=GRAPHS, local=True, weights=("shipped", "random")):
    """Both revisions on every graph, shipped and random weights, ``workers`` subprocesses at a
    time (CPU seconds are per process, so running them side by side does not change them); the
    local bound at radius 1e-2 on [0, 1] capped at CAP CPU seconds; a row is printed as soon as
    its runs are done."""
    from concurrent.futures import ThreadPoolExecutor

    import onnx

    from fimaudit.bounds.graph import Graph

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"onnx light_* graphs at 3×224×224, {os.cpu_count()} shared CPU cores (load average {load} at the start)")
    print(
        f"| graph | weights | CPU s before ({BASELINE}) | CPU s now | speed-up (CPU) | wall s now | certified L "
        "| bound before | max secant slope (onnxruntime) | bound / secant | local L at 1e-2 | local CPU s "
        "| local / secant |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "-C", ROOT, "archive", BASELINE, "fimaudit"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        cases = [
            (n, w, light(n) if w == "shipped" else randomised(light(n), os.path.join(tree, f"{n}.onnx")))
            for w in weights
            for n in names
        ]
        with ThreadPoolExecutor(workers) as pool:
            jobs = [
                (
                    n,
                    w,
                    p,
                    pool.submit(timed, p, ROOT, "global", CAP_NOW),
                    pool.submit(timed, p, tree, "global", CAP),
                    pool.submit(timed, p, ROOT, "local", CAP) if local else None,
                )
                for n, w, p in cases
            ]
            for name, weights, path, now, old, loc in jobs:
                cpu, wall, val = now.result()
                ocpu, _, oval = old.result()
                lcpu, _, lval = loc.result() if loc is not None else ("not run", "", "")
                try:
                    low = secant(path, Graph(onnx.load(path)).output)
                except ValueError:  # no bound to compare
                    low = float("nan")
                row = (name, weights, ocpu, cpu, ratio(ocpu, cpu), wall, val, oval, f"{low:.4g}", ratio(val, low))
                print("| " + " | ".join(row + (lval, lcpu, ratio(lval, low))) + " |", flush=True)


def main():
    warnings.simplefilter("ignore")
    if "--models-only" in sys.argv:
        return models()
    if "--graphs-only" in sys.argv:
        args = sys.argv[1:]
        workers = int(args.pop(args.index("--workers") + 1)) if "--workers" in args else 3
        weights = args.pop(args.index("--weights") + 1).split(",") if "--weights" in args else ("shipped", "random")
        names = [a for a in args if not a.startswith("--")] or GRAPHS
        return graphs(workers=workers, names=names, local="--no-local" not in args, weights=weights)
    models()
    print()
    graphs()


def models():
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


if __name__ == "__main__":
    main()
