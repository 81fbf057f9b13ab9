"""The local bound on the ImageNet architecture graphs the onnx package ships, one run.

    python benchmarks/local_graphs.py [NAME ...] [--weights shipped,random] [--cap 300]

For each graph (``light_*`` at 3×224×224, 1000 classes; shipped weights, all 0.02, and the
random ones of benchmarks/bounds.py:randomised) and one input x in [0, 1] (the one
benchmarks/bounds.py uses): fimaudit.local_bound on the ℓ∞ box of radius 1e-2 around x inside
[0, 1], in a subprocess capped at ``--cap`` CPU seconds (its CPU and wall seconds; the global
bound it is capped by is computed in the same process, and printed), against the largest
secant slope ‖z(x') − z(x)‖ / ‖x' − x‖ measured with onnxruntime for x' in the same box: along
the constant direction, random sign vectors and random points (a lower bound on sup ‖J‖₂ over
the box). On these graphs one backward row per logit costs more than the budget allows, so the
bound is the magnitude operator's (fimaudit/bounds/local/magnitude.py).

Writes benchmarks/results/local_graphs_cpu.txt (after every row; rows of graphs and weights not
named in this run are kept).
"""

import os
import resource
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from bounds import light, logit_session, randomised  # noqa: E402

RHO = 1e-2
TIMED = """
import sys, time
import numpy as np
import fimaudit as fa
t, c = time.perf_counter(), time.process_time()
x = np.random.default_rng(0).random((1, 3, 224, 224)).astype(np.float32)
try:
    lb = fa.local_bound(sys.argv[1], x, float(sys.argv[2]), input_domain=(0.0, 1.0))
    out = f"ok {float(lb.lipschitz[0])!r} {lb.global_lipschitz!r}"
except Exception as err:
    out = f"refused {type(err).__name__}"
print(f"{time.process_time() - c:.1f} {time.perf_counter() - t:.1f} {out}")
"""


def run_local(path, cap):
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", TIMED, path, str(RHO)],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CPU, (cap, cap)),
    )
    if out.returncode != 0 or not out.stdout.strip():
        return f"> {cap}", "", "not finished", ""
    cpu, wall, kind, *rest = out.stdout.strip().splitlines()[-1].split(" ")
    if kind != "ok":
        return cpu, wall, f"refused: {rest[0]}", ""
    return cpu, wall, float(rest[0]), float(rest[1])


def measured(path, pairs=6, seed=1):
    """max ‖z(x') − z(x)‖₂ / ‖x' − x‖₂ over x' in the box: x ± ρ·1, random signs, random points."""
    import onnx

    from fimaudit.bounds.graph import Graph

    logits = Graph(onnx.load(path)).output
    sess = logit_session(path, logits)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, 3, 224, 224)).astype(np.float32).astype(np.float64)
    rng = np.random.default_rng(seed)
    dirs = [np.ones_like(x), -np.ones_like(x)]
    dirs += [np.sign(rng.standard_normal(x.shape)) for _ in range(pairs)]
    dirs += [rng.uniform(-1, 1, x.shape) for _ in range(pairs)]
    z = sess.run([logits], {name: x.astype(np.float32)})[0].astype(np.float64)
    best = 0.0
    for d in dirs:
        y = np.clip(x + RHO * d, 0.0, 1.0).astype(np.float32).astype(np.float64)
        zy = sess.run([logits], {name: y.astype(np.float32)})[0].astype(np.float64)
        best = max(best, float(np.linalg.norm(zy - z) / np.linalg.norm(y - x)))
    return best


def main():
    args = sys.argv[1:]
    cap = int(args.pop(args.index("--cap") + 1)) if "--cap" in args else 300
    weights = args.pop(args.index("--weights") + 1).split(",") if "--weights" in args else ["shipped", "random"]
    names = [a for a in args if not a.startswith("--")] or ["resnet50", "densenet121", "inception_v1", "squeezenet"]
    out = os.path.join(ROOT, "benchmarks", "results", "local_graphs_cpu.txt")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        f"onnx light_* graphs at 3×224×224, local bound at ℓ∞ radius {RHO} in [0, 1], capped at {cap} CPU s, one "
        f"at a time, {os.cpu_count()} shared CPU cores (load average {load} at the start)",
        "| graph | weights | local L | local CPU s | wall s | global L (same process) | measured max secant in the box "
        "| local / measured | global / measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    tmp = tempfile.mkdtemp()
    kept = []  # rows of graphs and weights not rerun now
    if os.path.exists(out):
        for row in open(out).read().splitlines()[3:]:
            cells = [c.strip() for c in row.strip("|").split("|")]
            if len(cells) > 1 and not (cells[0] in names and cells[1] in weights):
                kept.append(row)
    lines += kept
    for w in weights:
        for n in names:
            path = light(n)
            if w == "random":
                import onnx

                path = randomised(light(n), os.path.join(tmp, f"{n}.onnx"))
                m = onnx.load(path)
                m.ir_version = max(m.ir_version, 4)  # before IR 4 every initializer had to be a graph input too
                onnx.save(m, path)
            cpu, wall, L, G = run_local(path, cap)
            low = measured(path)
            r = lambda a: f"{a / low:.3g}×" if isinstance(a, float) and low > 0 else ""  # noqa: E731
            fmt = lambda a: f"{a:.4g}" if isinstance(a, float) else a  # noqa: E731
            lines.append(f"| {n} | {w} | {fmt(L)} | {cpu} | {wall} | {fmt(G)} | {low:.4g} | {r(L)} | {r(G)} |")
            print(lines[-1], flush=True)
            with open(out, "w") as f:
                f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
