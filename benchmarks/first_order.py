"""The first-order distance d₁ = min_j (z_y − z_j)/‖∇(z_y − z_j)‖: its cost, its precision at
saturation and how well it predicts what an attack finds, against λ_max, in one run.

    python benchmarks/first_order.py [--quick]

Prints, on this machine and in this run (and writes benchmarks/results/first_order_cpu.txt):
1. inputs/s of white-box exact, which now returns d₁ too (rows of J from unit cotangents, W = R J
   in float64), beside the formulation without it (vjps with R's rows, W in the model's dtype),
   on the same inputs, and their largest relative λ_max difference;
2. d₁'s relative error at a saturated softmax (p_y = 1 − e^{−gap}) against the closed form of a
   linear model, float32 and float64;
3. on four digits MLPs of the validation family (trained here, fixed seeds): the Spearman rank
   correlation of d₁ and of λ_max with the minimal ℓ2 distance PGD + bisection finds, pooled over
   the models' correctly classified inputs.
"""

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fimaudit_torch.testing import cifar_cnn, resnet18  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit._array import namespace  # noqa: E402
from fimaudit._operator import FisherOperator  # noqa: E402
from fimaudit.linalg import top_eigh  # noqa: E402
from fimaudit.plugins import wrap  # noqa: E402


def best_of(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def rows_of_r(model, x):
    """λ_max from vjps with R's rows as cotangents, W = R J and B = W Wᵀ in the model's dtype."""
    xp = namespace(x)
    op = FisherOperator(model, xp, x)
    W = op.vjp_many(op.R.dense(op.n, op.C, op.logits))
    vals, _ = top_eigh(xp, xp.matmul(W, xp.permute_dims(W, (0, 2, 1))), 1)
    return vals[:, 0]


def cost(quick):
    lines = [
        "| model (d, C), inputs | exact with d₁, inputs/s | R-row cotangents, inputs/s | ratio | max rel. λ diff |"
    ]
    lines.append("|---|---|---|---|---|")
    for name, make, n in [("small CNN", cifar_cnn, 16), ("ResNet-18 (32×32)", resnet18, 4)]:
        torch.manual_seed(0)
        net = make().eval()
        n = n // 2 if quick else n
        x = torch.rand(n, 3, 32, 32)
        model = wrap(net)
        fa.fisher_norm(model, x[:2], method="exact")  # warm-up
        r, t_new = best_of(lambda: fa.fisher_norm(model, x, method="exact"), 1 if quick else 2)
        old, t_old = best_of(lambda: rows_of_r(model, x), 1 if quick else 2)
        diff = float(((r.value.double() - old.double()).abs() / old.double().abs()).max())
        lines.append(f"| {name} (3072, 10) | {n / t_new:,.1f} | {n / t_old:,.1f} | {t_old / t_new:.2f}× | {diff:.1e} |")
    return lines


def saturation():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((10, 64))
    x = rng.standard_normal((1, 64))
    lines = ["| gap z_y − z_j (1 − p_y) | d₁ rel. error, float64 | d₁ rel. error, float32 |", "|---|---|---|"]
    for gap in [5.0, 15.0, float(np.log(1e12)), 40.0, 80.0]:
        b = -(x @ W.T)[0]
        b[3] += gap  # every logit 0 but class 3
        truth = min(gap / np.linalg.norm(W[3] - W[j]) for j in range(10) if j != 3)
        errs = []
        for dtype in (torch.float64, torch.float32):
            net = torch.nn.Linear(64, 10).to(dtype)
            with torch.no_grad():
                net.weight.copy_(torch.from_numpy(W))
                net.bias.copy_(torch.from_numpy(b))
            d = fa.fisher_norm(net, torch.from_numpy(x).to(dtype), method="exact").first_order_distance
            errs.append(abs(float(d[0]) - truth) / truth)
        rest = 9 * np.exp(-gap) / (1 + 9 * np.exp(-gap))
        lines.append(f"| {gap:.4g} ({rest:.1e}) | {errs[0]:.1e} | {errs[1]:.1e} |")
    return lines


def prediction(quick):
    from scipy import stats

    from benchmarks.validation import attacks, data, train, zoo

    Xtr, ytr, Xte, yte, shape = data.load("digits")
    C = int(ytr.max()) + 1
    cheap = ("digits/mlp-w32", "digits/mlp-w256", "digits/mlp-w256-wd", "digits/mlp-w256-3ep")
    models = [m for m in zoo.FAMILY if m[0] in cheap][: 2 if quick else 4]  # no adversarial or Jacobian training
    n = 40 if quick else 100
    x, y = Xte[:n], yte[:n]
    pool = {"d1": [], "lam": [], "dist": []}
    lines = ["| model | within-model ρ(d₁, distance) | within-model ρ(λ_max, distance) | inputs |", "|---|---|---|---|"]
    for name, _, arch, width, opts in models:
        torch.manual_seed(0)
        net = zoo.build(arch, shape, C, Xtr.mean(0), Xtr.std(0), width)
        train.train(net, Xtr, ytr, **{"epochs": 2 if quick else 60, **opts})
        net.eval()
        r = fa.fisher_norm(fa.wrap(net, dtype=torch.float64), x.astype(np.float64), method="exact")
        dist = attacks.minimal_distance(net, torch.from_numpy(x), torch.from_numpy(y), 4.0).numpy()
        with torch.no_grad():
            keep = (net(torch.from_numpy(x)).argmax(1).numpy() == y) & np.isfinite(dist)
        d1, lam = np.asarray(r.first_order_distance)[keep], np.asarray(r.value)[keep]
        pool["d1"].append(d1)
        pool["lam"].append(lam)
        pool["dist"].append(dist[keep])
        rho_d1 = stats.spearmanr(d1, dist[keep]).statistic
        rho_lam = stats.spearmanr(lam, dist[keep]).statistic
        lines.append(f"| {name} | {rho_d1:+.2f} | {rho_lam:+.2f} | {int(keep.sum())} |")
    d1, lam, dist = (np.concatenate(pool[k]) for k in ("d1", "lam", "dist"))
    lines.append(
        f"| pooled over {len(models)} models | {stats.spearmanr(d1, dist).statistic:+.2f} | "
        f"{stats.spearmanr(lam, dist).statistic:+.2f} | {len(dist)} |"
    )
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    t0 = time.perf_counter()
    out = [f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads 2", ""]
    out += (
        ["1. cost of exact with the first-order distance (16 and 4 inputs, float32, CPU, best of 2)"]
        + cost(args.quick)
        + [""]
    )
    out += ["2. saturated softmax: d₁ against the closed form of a linear model"] + saturation() + [""]
    out += ["3. digits MLPs (4 of the validation family, 100 test inputs): Spearman ρ with the minimal ℓ2"]
    out += ["adversarial distance (PGD + bisection), correctly classified inputs"]
    out += prediction(args.quick)
    out += ["", f"total {time.perf_counter() - t0:.0f} s"]
    text = "\n".join(out)
    print(text)
    if not args.quick:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "first_order_cpu.txt")
        with open(path, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
