"""Black-box accuracy and cost, side by side on the same models and inputs, one run.

    python benchmarks/blackbox.py [--quick] [--inputs N] [--seeds S]
    python benchmarks/blackbox.py --tol [--inputs N]   # the sequential sketch, benchmarks/_tol.py
    python benchmarks/blackbox.py --law   # the same on CNNs at d = 3,072 and 12,288, benchmarks/_tol_law.py
    python benchmarks/blackbox.py --law --part digits   # one part of it: cnns, digits, spectra or rank1

A float32 torch CNN is served as a black box that returns probabilities (numpy in, numpy
out). For each estimator: calls per input and the relative error of λ_max against
autodiff (float64 inputs, exact): fimaudit black-box exact (2d + set-up calls; with
``kinks="extrapolate"`` 4d + set-up, every column also at twice the step), fimaudit
sketch at budgets 201 (the seed's query count), d/16 and d/4 (median and 90th
percentile over inputs × seeds, with the coverage of its 95% interval and how often its
certified lower bound stayed below the truth; for exact, how often its finite-difference
bracket held the truth), and the seed's estimator, max over 100
random unit probes of vᵀFv (201 calls), with the same finite differences; and the rows per input
that reach the service during ``fa.audit`` at budget 201, counted by the service.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _models import seed_estimator  # noqa: E402
from fimaudit_torch.testing import cifar_cnn, smooth_cifar_cnn  # noqa: E402

import fimaudit as fa  # noqa: E402


def service(net):
    def fn(batch):
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(batch)), dim=1).numpy()

    return fn


def audit_rows(net, xn, budget, served):
    """Rows per input that reach the service during ``fa.audit(..., budget=budget)``, counted by
    the service itself: each row it answers is attributed to the nearest audited input (every
    row is an input plus a finite-difference step far smaller than the inputs' distances)."""
    flat = xn.reshape(len(xn), -1).astype(np.float64)
    norms = (flat**2).sum(1)
    counts = np.zeros(len(xn), dtype=np.int64)
    fn = service(net)

    def counted(batch):
        b = batch.reshape(len(batch), -1).astype(np.float64)
        np.add.at(counts, np.argmin(norms[None, :] - 2 * b @ flat.T, axis=1), 1)
        return fn(batch)

    a = fa.audit(fa.wrap(counted, **served), xn, budget=budget, progress=False)
    return int(counts.max()), max(int(r["queries"]) for r in a.rows)


def run(name, make, n, seeds):
    torch.manual_seed(0)
    net = make().eval()
    x = torch.rand(n, 3, 32, 32)
    truth = fa.fisher_norm(net, x.double().numpy(), method="exact").value
    xn = x.numpy()
    d = xn[0].size
    served = dict(input_shape=(3, 32, 32), output="probs", accepts="numpy", batch_size=4096)
    bb = fa.wrap(service(net), **served)
    rows = []
    r = fa.fisher_norm(bb, xn, method="exact")

    def held(r):  # how often the FD-widened bracket of an exact result held the truth
        return np.mean((r.lower <= truth) & (truth <= r.upper)), np.mean(r.lower <= truth)

    rows.append(("fimaudit exact", int(round(float(r.queries.mean()))), np.abs(r.value / truth - 1), *held(r)))
    signed = {"central": r.value / truth - 1}
    width = {"central": np.median((r.upper - r.lower) / (2 * r.value))}
    r = fa.fisher_norm(fa.wrap(service(net), kinks="extrapolate", **served), xn, method="exact")
    rows.append(('fimaudit exact, kinks="extrapolate"', int(r.queries[0]), np.abs(r.value / truth - 1), *held(r)))
    signed["extrapolated"] = r.value / truth - 1
    width["extrapolated"] = np.median((r.upper - r.lower) / (2 * r.value))
    for budget in [201, d // 16, d // 4]:
        errs, cover, low_ok = [], [], []
        for s in range(seeds):
            rs = fa.fisher_norm(bb, xn, method="sketch", budget=budget, seed=s)
            errs.append(np.abs(rs.value / truth - 1))
            cover.append((rs.lower <= truth) & (truth <= rs.upper))
            low_ok.append(rs.lower <= truth)
        rows.append(
            (
                f"fimaudit sketch, budget {budget}",
                int(rs.queries[0]),
                np.concatenate(errs),
                np.mean(cover),
                np.mean(low_ok),
            )
        )
    est, calls = seed_estimator(bb, xn)
    rows.append(("seed estimator (max of 100 vᵀFv)", calls, np.abs(est / truth - 1), None, None))
    ratio = np.median(est / truth)
    sent, booked = audit_rows(net, xn, 201, served)
    print(
        f"\n{name}: d = {d}, C = 10, {n} inputs × {seeds} seeds; median λ_max {np.median(truth):.3g}; "
        f"seed estimator / truth = {ratio:.4f} (median); mean signed error of exact: "
        + ", ".join(f"{k} {v.mean():+.2e}" for k, v in signed.items())
        + "; median bracket half-width of exact: "
        + ", ".join(f"{k} {v:.1%}" for k, v in width.items())
        + f"; fa.audit at budget 201: at most {sent} rows per input reached the service ({booked} booked)"
    )
    print(
        "| estimator | calls per input | median rel. error | 90th pct rel. error | interval coverage | lower ≤ truth |"
    )
    print("|---|---|---|---|---|---|")
    for label, calls, err, cov, low in rows:
        extra = f"{cov:.2f} | {low:.2f}" if cov is not None else "– | –"
        print(f"| {label} | {calls:,} | {np.median(err):.2e} | {np.quantile(err, 0.9):.2e} | {extra} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--inputs", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tol", action="store_true", help="the sequential sketch (tol=) against an oracle instead")
    ap.add_argument("--law", action="store_true", help="the sequential sketch on CNNs, from the sketch's exact law")
    ap.add_argument("--part", choices=["cnns", "digits", "spectra", "rank1"], help="--law: this part only")
    args = ap.parse_args()
    models = [("small CNN (ReLU, max-pool)", cifar_cnn), ("smooth CNN (GELU, average-pool)", smooth_cifar_cnn)]
    if args.law:
        import _tol_law

        print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}; 95% intervals; tol = relative half-width")
        inputs, seeds = (1, 4) if args.quick else (3, 20)
        want = lambda part: args.part in (None, part)  # noqa: E731
        setup = fa.wrap(service(cifar_cnn()), input_shape=(3, 32, 32), output="probs").costs().setup
        if want("cnns"):
            setup = _tol_law.cnns(models, [0.1, 0.05], inputs, seeds, service)
        if want("digits"):
            archs = ["mlp"] if args.quick else ["mlp", "cnn", "resnet"]
            _tol_law.digits(archs, [0.1, 0.05], 4 if args.quick else 20, seeds // 4 if args.quick else 3, service)
        if want("spectra"):
            _tol_law.spectra([0.1, 0.05], 3072, 20 if args.quick else 100, setup)
        if want("rank1"):
            _tol_law.rank_one_bound([3072, 12288], [0.1, 0.05], setup, runs=50 if args.quick else 200)
        return
    if args.tol:
        import _tol

        n, n_cnn = (12, 2) if args.quick else (60, args.inputs)
        print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}; 95% intervals; tol = relative half-width")
        _tol.simulated([0.1, 0.05], n)
        _tol.cnns(models, [0.1], n_cnn, service)
        return
    n, seeds = (4, 2) if args.quick else (args.inputs, args.seeds)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}; float32 models served as probabilities")
    run("small CNN (ReLU, max-pool)", cifar_cnn, n, seeds)
    run("smooth CNN (GELU, average-pool)", smooth_cifar_cnn, n, seeds)


if __name__ == "__main__":
    main()
