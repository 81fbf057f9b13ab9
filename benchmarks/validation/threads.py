"""Which of the study's numbers depend on the thread count: one model trained and scored under
1 and under 2 threads, every per-input number compared.

    python -m benchmarks.validation.threads [--model digits/mlp-w32] [--inputs 40]

Training runs in one thread whatever the caller's setting (``train.deterministic``), so the
weights agree bit for bit; the scores and attacks then run under each thread count (the study
itself runs them in one thread). Prints, per quantity, the largest relative difference between
the two runs and whether the two are bit-identical.
"""

import argparse
import warnings

import numpy as np
import torch

from . import attacks, data, metrics, train, zoo
from .__main__ import SETTINGS


def scores(net, x, y, shape, high):
    out, _, bound = metrics.fimaudit_scores(net, x, shape)
    out["first_order"] = metrics.first_order_distance(net, x)
    out["gradient_norm"] = metrics.gradient_norm(net, x)
    dist, _ = attacks.minimal_distance(net, torch.from_numpy(x), torch.from_numpy(y), high)
    out.update({f"distance_{k}": v.numpy() for k, v in dist.items()})
    out["graph_bound_L"] = np.array([bound["lipschitz"]])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits/mlp-w32")
    ap.add_argument("--inputs", type=int, default=40)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    name, ds, arch, width, opts = next(f for f in zoo.FAMILY if f[0] == args.model)
    s = SETTINGS[ds]
    Xtr, ytr, Xte, yte, shape = data.load(ds)
    runs, weights = [], []
    outer = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(opts.get("seed", 0))
        net = zoo.build(arch, shape, int(ytr.max()) + 1, Xtr.mean(0), Xtr.std(0), width)
        train.train(net, Xtr, ytr, **{"epochs": s["epochs"], **opts})
        weights.append(net.state_dict())
        runs.append(scores(net, Xte[: args.inputs], yte[: args.inputs], shape, s["high"]))
    torch.set_num_threads(outer)
    same = all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    print(f"{name}, {args.inputs} inputs, torch {torch.__version__}: 1 thread vs 2 threads")
    print("| quantity | largest relative difference | bit-identical |")
    print("|---|---|---|")
    print(f"| trained weights | {'0' if same else 'n/a'} | {'yes' if same else 'no'} |")
    for k in runs[0]:
        a, b = (np.asarray(r[k], dtype=np.float64) for r in runs)
        fin = np.isfinite(a) & np.isfinite(b)
        rel = np.max(np.abs(a[fin] - b[fin]) / np.maximum(np.abs(a[fin]), 1e-300), initial=0.0)
        ident = np.array_equal(a, b, equal_nan=True)
        print(f"| {k} | {rel:.1e} | {'yes' if ident else 'no'} |")


if __name__ == "__main__":
    main()
