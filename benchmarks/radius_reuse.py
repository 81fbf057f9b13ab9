"""The certified ℓ2 radius with and without the reuse of a refused ball's intervals, side by side:

    python benchmarks/radius_reuse.py [--models digits/resnet,digits/resnet-jacreg] [--inputs 3]
        [--weights FOLDER]

Per model of the validation study's zoo (trained as the study trains it, or read from ``--weights``
as ``benchmarks.validation.radius`` keeps them) and each of its first ``--inputs`` test inputs that
it classifies correctly: ``fimaudit.certified_radius`` (5 log-bisection steps, inputs in [0, 1],
as the study calls it) with ``reuse=False`` (every ball bounded afresh) and with ``reuse=True``
(the default: balls smaller than a refused one start from its intervals), their radii and ratio,
and the CPU seconds each took (process time, less sensitive than wall time to other processes on
the machine) and their ratio. The ONNX export and the global cap, shared by the inputs, are timed
apart (wall). The machine's load average is written at the start and the end.

Writes benchmarks/results/radius_reuse_cpu.txt.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "adapters", "torch"))
import fimaudit as fa  # noqa: E402
from benchmarks.validation import radius, zoo  # noqa: E402
from fimaudit.bounds.local import api, search  # noqa: E402

OUT = os.path.join(ROOT, "benchmarks", "results", "radius_reuse_cpu.txt")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits/resnet,digits/resnet-jacreg")
    ap.add_argument("--inputs", type=int, default=3)
    ap.add_argument("--weights", help="folder of trained weights (benchmarks.validation.radius --weights)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = [
        "Certified ℓ2 radius per input, every ball afresh (fresh) vs balls inside a refused one reusing its "
        f"intervals (reused); {radius.ITERATIONS} log-bisection steps, inputs in [0, 1], float64, one core",
        f"load average at the start: {os.getloadavg()[0]:.2f} (one-minute)",
        "| model | input | r fresh | r reused | reused/fresh | CPU s fresh | CPU s reused | speed-up | setup s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in args.models.split(","):
        _, ds, arch, width, opts = next(s for s in zoo.FAMILY if s[0] == name)
        net, x, y, shape = radius.retrain(ds, arch, width, opts, radius._cache(args.weights, name))
        with torch.no_grad():
            idx = np.flatnonzero(net(torch.from_numpy(x)).argmax(1).numpy() == y)[: args.inputs]
        t = time.perf_counter()
        s = api._Setup(fa.wrap(net, input_shape=shape), x[idx].astype(np.float64), None, "categorical", 1.0,
                       (0.0, 1.0), True, 1 << 32, 4096, "l2")  # fmt: skip
        setup = time.perf_counter() - t
        for k, i in enumerate(idx):
            row = []
            for reuse in (False, True):
                t = time.process_time()
                row += [search.radius(s, k, radius.ITERATIONS, reuse), time.process_time() - t]
            (rf, sf), (rr, sr) = row[:2], row[2:]
            lines.append(
                f"| {name} | {i} | {rf:.5g} | {rr:.5g} | {rr / rf:.4f} | {sf:.1f} | {sr:.1f} | {sf / sr:.2f} | "
                f"{setup:.1f} |"
            )
            print(lines[-1], flush=True)
    lines.append(f"load average at the end: {os.getloadavg()[0]:.2f} (one-minute)")
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
