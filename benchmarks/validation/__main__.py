"""Does λ_max(F(x)) predict what attacks find?  One command, fixed seeds, two CPU cores:

    python -m benchmarks.validation [--quick] [--out benchmarks/validation/results]

Trains the model family of ``zoo.FAMILY`` (24 models on digits and breast_cancer), then for
every model and test input computes fimaudit's scores and the baselines (``metrics``) and the
attack side (``attacks``): PGD robust accuracy at four ε per norm (ℓ2, ℓ∞) on the whole test
split, and the minimal ℓ2 adversarial distance per input (PGD + bisection). Writes
``validation.json`` (every per-input number, costs, correlations with bootstrap intervals) and
``validation.svg`` and prints the tables the documentation shows.
"""

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch

from . import attacks, data, figure, metrics, stats, train, zoo

SETTINGS = {  # per dataset: inputs scored, ε grids, bisection ceiling, CLEVER inputs, epochs
    "digits": dict(
        inputs=200, l2=[0.25, 0.5, 1.0, 1.5], linf=[0.03, 0.06, 0.1, 0.15], high=4.0, clever_inputs=20, epochs=60
    ),
    "breast_cancer": dict(
        inputs=143, l2=[0.05, 0.1, 0.2, 0.4], linf=[0.01, 0.02, 0.05, 0.1], high=3.0, clever_inputs=60, epochs=100
    ),
}
CLEVER = dict(nb_batches=100, batch_size=100)  # ART clever_u; radius = the bisection ceiling
SENSITIVITY = ["lambda_whitebox", "lambda_blackbox", "trace", "gradient_norm", "seed_estimator"]
RADII = ["clever", "certified_radius"]  # larger = more robust (expected ρ > 0 with distance)


def run_model(name, ds, arch, width, opts, quick):
    s = SETTINGS[ds]
    Xtr, ytr, Xte, yte, shape = data.load(ds)
    C = int(ytr.max()) + 1
    torch.manual_seed(0)
    net = zoo.build(arch, shape, C, Xtr.mean(0), Xtr.std(0), width)
    opts = {"epochs": s["epochs"], **opts}
    if quick:  # a smoke run: the pipeline, not the models
        opts["epochs"] = min(opts["epochs"], 2)
    t0 = time.perf_counter()
    train.train(net, Xtr, ytr, **opts)
    row = {
        "name": name,
        "dataset": ds,
        "arch": arch,
        "width": width,
        "train": opts,
        "train_seconds": time.perf_counter() - t0,
    }
    xt, yt = torch.from_numpy(Xte), torch.from_numpy(yte)
    with torch.no_grad():
        row["clean_accuracy"] = float((net(xt).argmax(1) == yt).float().mean())
    row["robust_accuracy"] = {
        norm: {str(e): attacks.robust_accuracy(net, xt, yt, e, norm) for e in s[norm]} for norm in ("l2", "linf")
    }
    n = 12 if quick else s["inputs"]
    x, y = Xte[:n], yte[:n]
    scores, cost, bound = metrics.fimaudit_scores(net, x, shape)
    cost["trace"] = cost["lambda_whitebox"]  # the exact pass returns the trace too
    if bound["lipschitz"] is not None:  # one graph bound per model, then a margin per input
        cost["certified_radius"] = (bound["seconds"] / n, 1.0)
    t = time.perf_counter()
    scores["gradient_norm"] = metrics.gradient_norm(net, x)
    cost["gradient_norm"] = ((time.perf_counter() - t) / n, 2.0)  # a forward and a backward pass
    k = 3 if quick else s["clever_inputs"]
    t = time.perf_counter()
    cs = {"nb_batches": 10, "batch_size": 20} if quick else CLEVER
    cl = metrics.clever(net, x[:k], shape, C, s["high"], **cs)
    # per target class and sample: one class-gradient pair (ART computes both classes' gradients)
    cost["clever"] = ((time.perf_counter() - t) / k, float((C - 1) * 2 * cs["nb_batches"] * cs["batch_size"]))
    scores["clever"] = np.concatenate([cl, np.full(n - k, np.nan)])
    t = time.perf_counter()
    dist = attacks.minimal_distance(net, torch.from_numpy(x), torch.from_numpy(y), s["high"]).numpy()
    cost["minimal_distance_attack"] = ((time.perf_counter() - t) / n, float(attacks.MINIMAL_DISTANCE_PASSES))
    with torch.no_grad():
        correct = net(torch.from_numpy(x)).argmax(1).numpy() == y
    row.update(
        bound=bound,
        cost={k: {"seconds_per_input": v[0], "model_calls_per_input": v[1]} for k, v in cost.items()},
        per_input={
            "correct": correct.tolist(),
            "minimal_l2_distance": _list(dist),
            **{k: _list(v) for k, v in scores.items()},
        },
    )
    if "certified_radius" in scores:
        ok = correct & np.isfinite(dist)
        row["certified_radius_violations"] = int(np.sum(scores["certified_radius"][ok] > dist[ok] * (1 + 1e-6)))
    return row


def _list(a):
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=np.float64)]


def _arr(v):
    return np.array([np.nan if a is None else a for a in v], dtype=np.float64)


def per_input_correlations(rows, boots):
    """Pooled over a dataset's models, on correctly classified inputs with a finite distance."""
    out = {}
    for ds in SETTINGS:
        rs = [r for r in rows if r["dataset"] == ds]
        if not rs:
            continue
        pool = {}
        for r in rs:
            p = r["per_input"]
            keep = np.array(p["correct"]) & np.isfinite(_arr(p["minimal_l2_distance"]))
            for key in ["minimal_l2_distance"] + SENSITIVITY + RADII:
                pool.setdefault(key, []).append(_arr(p.get(key, [None] * len(keep)))[keep])
        pool = {k: np.concatenate(v) for k, v in pool.items()}
        clever_rows = np.isfinite(pool["clever"])
        res = {}
        for key in SENSITIVITY + RADII:
            a, d = pool[key], pool["minimal_l2_distance"]
            res[key] = {
                "spearman": stats.correlation(a, d, "spearman", boots),
                "kendall": stats.correlation(a, d, "kendall", boots),
                "spearman_on_clever_inputs": stats.correlation(a[clever_rows], d[clever_rows], "spearman", boots),
                "within_model_spearman": _within(rs, key),
            }
        out[ds] = res
    return out


def _within(rs, key):
    vals = []
    for r in rs:
        p = r["per_input"]
        if key not in p:
            continue
        keep = np.array(p["correct"])
        c = (
            stats.correlation(_arr(p[key])[keep], _arr(p["minimal_l2_distance"])[keep], boots=0)["value"]
            if keep.sum() >= 3
            else None
        )
        if c is not None:
            vals.append(c)
    return {
        "median": float(np.median(vals)) if vals else None,
        "min": float(np.min(vals)) if vals else None,
        "max": float(np.max(vals)) if vals else None,
        "models": len(vals),
    }


def per_model_correlations(rows, boots):
    """Spearman over a dataset's models: median score vs robust accuracy at every ε."""
    out = {}
    for ds in SETTINGS:
        rs = [r for r in rows if r["dataset"] == ds]
        if len(rs) < 3:
            continue
        summary = {
            key: np.array([np.nanmedian(_arr(r["per_input"].get(key, [None]))) for r in rs])
            for key in SENSITIVITY + ["clever"]
        }
        summary["mean_lambda_whitebox"] = np.array([np.nanmean(_arr(r["per_input"]["lambda_whitebox"])) for r in rs])
        summary["graph_bound_L"] = np.array([r["bound"]["lipschitz"] or np.nan for r in rs])
        res = {}
        for norm in ("l2", "linf"):
            for e in SETTINGS[ds][norm]:
                acc = np.array([r["robust_accuracy"][norm][str(e)] for r in rs])
                res[f"{norm}@{e}"] = {k: stats.correlation(v, acc, "spearman", boots) for k, v in summary.items()}
        out[ds] = res
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two models, a dozen inputs (a smoke test, not a study)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--boots", type=int, default=1000)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    warnings.simplefilter("ignore")
    family = [zoo.FAMILY[0], zoo.FAMILY[-1]] if args.quick else zoo.FAMILY
    t0 = time.perf_counter()
    rows = []
    for spec in family:
        rows.append(run_model(*spec, quick=args.quick))
        r = rows[-1]
        print(
            f"{r['name']:34s} clean {r['clean_accuracy']:.3f}  median λ_max "
            f"{np.nanmedian(_arr(r['per_input']['lambda_whitebox'])):.3g}  L "
            f"{r['bound']['lipschitz'] or float('nan'):.3g}  [{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )
    boots = 50 if args.quick else args.boots
    result = {
        "settings": SETTINGS,
        "clever": CLEVER,
        "quick": args.quick,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "models": rows,
        "per_input": per_input_correlations(rows, boots),
        "per_model": per_model_correlations(rows, boots),
    }
    result["seconds"] = time.perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "validation.json"), "w") as f:
        json.dump(result, f, indent=1)
    draw(result, os.path.join(args.out, "validation.svg"))
    report(result)
    return result


def draw(result, path):
    panels = []
    for ds in SETTINGS:
        rs = [r for r in result["models"] if r["dataset"] == ds]
        if not rs:
            continue
        groups = []
        for r in rs:
            p = r["per_input"]
            keep = np.array(p["correct"])
            groups.append((r["name"], np.log10(_arr(p["lambda_whitebox"])[keep]), _arr(p["minimal_l2_distance"])[keep]))
        panels.append(
            lambda ox, oy, g=groups, ds=ds: figure.scatter(
                ox, oy, g, f"{ds}: per input (colour = model)", "log10 λ_max(F(x))", "minimal ℓ2 adversarial distance"
            )
        )
        mid = str(SETTINGS[ds]["l2"][1])
        pts = [
            (
                r["name"],
                [np.log10(np.nanmedian(_arr(r["per_input"]["lambda_whitebox"])))],
                [r["robust_accuracy"]["l2"][mid]],
            )
            for r in rs
        ]
        panels.append(
            lambda ox, oy, g=pts, ds=ds, mid=mid: figure.scatter(
                ox, oy, g, f"{ds}: per model", "log10 median λ_max", f"PGD ℓ2 robust accuracy, ε = {mid}"
            )
        )
    for ds, res in result["per_input"].items():
        rows = [(k, v["spearman"]["value"], v["spearman"]["low"], v["spearman"]["high"]) for k, v in res.items()]
        panels.append(
            lambda ox, oy, rows=rows, ds=ds: figure.bars(ox, oy, rows, f"{ds}: score vs minimal distance, pooled")
        )
    figure.write(path, panels)


def _ci(c):
    return "n/a" if c["value"] is None else f"{c['value']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"


def report(result):
    for ds, res in result["per_input"].items():
        rs = [r for r in result["models"] if r["dataset"] == ds]
        print(
            f"\n{ds}: per input, score vs minimal ℓ2 adversarial distance (pooled over {len(rs)} models, "
            f"correct inputs; 95% bootstrap CI)"
        )
        print(
            "| score | Spearman ρ | Kendall τ | ρ on CLEVER's inputs | within-model ρ, median [min, max] | "
            "s / input | model calls / input |"
        )
        print("|---|---|---|---|---|---|---|")
        for k, v in res.items():
            costs = [r["cost"][k] for r in rs if k in r["cost"]]
            w = v["within_model_spearman"]
            within = "n/a" if w["median"] is None else f"{w['median']:+.2f} [{w['min']:+.2f}, {w['max']:+.2f}]"
            sec = f"{np.median([c['seconds_per_input'] for c in costs]):.2g}" if costs else "(per model)"
            calls = f"{np.median([c['model_calls_per_input'] for c in costs]):.0f}" if costs else ""
            print(
                f"| {k} | {_ci(v['spearman'])} (n={v['spearman']['n']}) | {_ci(v['kendall'])} | "
                f"{_ci(v['spearman_on_clever_inputs'])} | {within} | {sec} | {calls} |"
            )
    for ds, res in result["per_model"].items():
        keys = list(next(iter(res.values())).keys())
        print(f"\n{ds}: per model, Spearman ρ of the score vs PGD robust accuracy (95% bootstrap CI over models)")
        print("| ε | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for eps, v in res.items():
            print(f"| {eps} | " + " | ".join(_ci(v[k]) for k in keys) + " |")
    print(f"\ntotal {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
