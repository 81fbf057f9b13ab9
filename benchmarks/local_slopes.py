"""Optimised ReLU lower slopes (α-CROWN, fimaudit.bounds.local.slopes) against CROWN's adaptive
slopes, side by side, on the validation study's models.

    python -m benchmarks.local_slopes --without ROWS0 --with ROWS1 [--weights DIR --margins 3]

ROWS0 and ROWS1 are JSON-lines files of ``benchmarks.validation.radius`` (the same models and
inputs, computed with ``certified_radius(alpha=0)`` and with its default ``alpha``); per model:
the median certified ℓ2 radius r, the median attack distance d (PGD with bisection, an upper
bound on the true distance), the median and largest d / r, the violations (r above d by more
than 1e-6 relative: none may occur) and the seconds per input, without and with the optimised
slopes, and the median ratio of the two radii per input. With ``--margins k`` and the cached
weights, also for the first k inputs of each model the lower bound of the margins on the ℓ2
ball (∩ [0, 1]) of radius 1.5 × the radius certified without the slopes, for alpha = 0 and 20
(``local_bound(norm="l2")``, uncapped), and its seconds.

Writes benchmarks/results/local_slopes_cpu.txt.
"""

import argparse
import json
import os

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "local_slopes_cpu.txt")
TOLERANCE = 1e-6


def _rows(path):
    with open(path) as f:
        return {r["name"]: r for r in map(json.loads, f) if r.get("radius")}


def _stats(row):
    r, d = np.array(row["radius"]), np.array(row["attack_distance"])
    q = d / np.maximum(r, 1e-300)
    return dict(
        r=np.median(r), d=np.median(d), q=np.median(q), qmax=q.max(), bad=int(np.sum(r > d * (1 + TOLERANCE))),
        s=row["radius_seconds_per_input"],
    )  # fmt: skip


def radius_table(without, with_):
    lines = [
        "Certified l2 radius r without / with optimised slopes (median over inputs; d: attack distance)",
        "| model | inputs | median r | median d | median d/r | max d/r | violations | s/input | median r1/r0 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in [n for n in with_ if n in without]:
        a, b = without[name], with_[name]
        if a["indices"] != b["indices"]:
            continue
        s0, s1 = _stats(a), _stats(b)
        gain = np.median(np.array(b["radius"]) / np.maximum(np.array(a["radius"]), 1e-300))
        cell = lambda k, f: f"{f.format(s0[k])} / {f.format(s1[k])}"  # noqa: E731
        lines.append(
            f"| {name} | {len(a['indices'])} | {cell('r', '{:.4g}')} | {s1['d']:.4g} | {cell('q', '{:.3g}')} | "
            f"{cell('qmax', '{:.3g}')} | {cell('bad', '{}')} | {cell('s', '{:.1f}')} | {gain:.3f} |"
        )
    return lines


def margin_table(without, weights, k):
    import torch

    import fimaudit as fa
    from benchmarks.validation import radius, zoo

    torch.set_num_threads(1)
    lines = [
        "",
        "Lower bound of the margins on the l2 ball of radius 1.5 r0 (r0: certified without the slopes)",
        "| model | input | radius | alpha=0 | alpha=20 | seconds (0 / 20) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in without.items():
        _, ds, arch, width, opts = next(s for s in zoo.FAMILY if s[0] == name)
        net, x, _, shape = radius.retrain(ds, arch, width, opts, radius._cache(weights, name))
        w = fa.wrap(net, input_shape=shape)
        for i, r0 in list(zip(row["indices"], row["radius"]))[:k]:
            got = []
            for steps in (0, 20):
                b = fa.local_bound(
                    w, x[i : i + 1].astype(np.float64), 1.5 * r0, norm="l2", input_domain=(0.0, 1.0),
                    global_cap=False, alpha=steps,
                )  # fmt: skip
                got.append((float(b.margin_lower[0]), float(b.seconds[0])))
            lines.append(
                f"| {name} | {i} | {1.5 * r0:.4g} | {got[0][0]:.4g} | {got[1][0]:.4g} | "
                f"{got[0][1]:.1f} / {got[1][1]:.1f} |"
            )
            print(lines[-1], flush=True)
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--without", required=True, help="radius rows computed with alpha=0")
    ap.add_argument("--with", dest="with_", required=True, help="radius rows computed with the default alpha")
    ap.add_argument("--weights", help="the cached weights of benchmarks.validation.radius (for --margins)")
    ap.add_argument("--margins", type=int, default=0, help="inputs per model for the fixed-radius margin table")
    args = ap.parse_args(argv)
    without, with_ = _rows(args.without), _rows(args.with_)
    lines = radius_table(without, with_)
    print("\n".join(lines), flush=True)
    if args.margins:
        lines += margin_table({n: r for n, r in without.items() if n in with_}, args.weights, args.margins)
    with open(RESULTS, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
