"""Does λ_max(F(x)) predict what attacks find?  One command, fixed seeds, one CPU thread:

    python -m benchmarks.validation [--quick] [--out benchmarks/validation/results]

Trains the model family of ``zoo.FAMILY`` (40 models on digits, breast_cancer and mnist1d;
deterministic, see ``train``), then for every model and scored test input computes
fimaudit's scores and the baselines (``metrics``) and the attack side (``attacks``): the
minimal ℓ2 adversarial distance per input from an ensemble of three attacks (every point
verified), PGD robust accuracy at four ε per norm, single-start PGD-40 as before and the
stronger attacks (ℓ2: the ensemble's distances; ℓ∞: PGD-40 with 5 restarts). Writes
``validation.json`` (every per-input number, costs, correlations with i.i.d. and
model-clustered bootstrap intervals) and ``validation.svg`` and prints the tables the
documentation shows (``report``).
"""

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch

from . import analysis, attacks, data, figure, metrics, report, train, zoo

SETTINGS = {  # per dataset: inputs scored, ε grids, bisection ceiling, CLEVER inputs, epochs
    "digits": dict(
        inputs=100, l2=[0.25, 0.5, 1.0, 1.5], linf=[0.03, 0.06, 0.1, 0.15], high=4.0, clever_inputs=12, epochs=30
    ),
    "breast_cancer": dict(
        inputs=143, l2=[0.05, 0.1, 0.2, 0.4], linf=[0.01, 0.02, 0.05, 0.1], high=3.0, clever_inputs=40, epochs=100
    ),
    "mnist1d": dict(
        inputs=100, l2=[0.01, 0.02, 0.05, 0.1], linf=[0.0025, 0.005, 0.01, 0.02], high=3.0, clever_inputs=12, epochs=30
    ),  # the [0, 1] map of mnist1d's range leaves most values in [0.2, 0.7]: its distances are ~10× smaller
}
CLEVER = dict(nb_batches=100, batch_size=100)  # ART clever_u; radius = the bisection ceiling
COLLAPSED = 1e-3
QUICK = (
    "breast_cancer/attention",
    "digits/mlp-w32",
    "mnist1d/cnn",
)  # --quick: one model per dataset  # a CLEVER score below this is a collapsed Weibull fit (location → −∞·0)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_model(name, ds, arch, width, opts, quick):
    t_model = time.perf_counter()
    s = SETTINGS[ds]
    Xtr, ytr, Xte, yte, shape = data.load(ds)
    C = int(ytr.max()) + 1
    torch.manual_seed(opts.get("seed", 0))
    net = zoo.build(arch, shape, C, Xtr.mean(0), Xtr.std(0), width)
    opts = {"epochs": s["epochs"], **opts}
    if quick:  # a smoke run: the pipeline, not the models
        opts["epochs"] = min(opts["epochs"], 2)
    _, t_train = _timed(lambda: train.train(net, Xtr, ytr, **opts))
    row = dict(name=name, dataset=ds, arch=arch, width=width, train=opts, train_seconds=t_train)
    with torch.no_grad():
        row["clean_accuracy_test_split"] = float((net(torch.from_numpy(Xte)).argmax(1).numpy() == yte).mean())
    n = 12 if quick else s["inputs"]
    x, y = Xte[:n], yte[:n]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        correct = net(xt).argmax(1).numpy() == y
    row["clean_accuracy"] = float(correct.mean())

    scores, cost, bound = metrics.fimaudit_scores(net, x, shape)
    cost["trace"] = cost["lambda_whitebox"]  # the exact pass returns the trace too
    cost["margin"] = (0.0, 1.0)  # the logits of that pass
    if bound["lipschitz"] is not None:  # one graph bound per model, then a margin per input
        cost["certified_radius"] = (bound["seconds"] / n, 1.0)
        cost["certified_radius_pair"] = ((bound["seconds"] + bound["seconds_pair"]) / n, 1.0)
    scores["gradient_norm"], t = _timed(lambda: metrics.gradient_norm(net, x))
    cost["gradient_norm"] = (t / n, 2.0)  # a forward and a backward pass
    scores["first_order"], t = _timed(lambda: metrics.first_order_distance(net, x))
    cost["first_order"] = (t / n, float(1 + C))  # a forward pass and one backward pass per class

    k = (3 if quick else s["clever_inputs"]) if quick or name in zoo.CLEVER_MODELS else 0
    cs = {"nb_batches": 10, "batch_size": 20} if quick else CLEVER
    (cl, rows_per_input), t = _timed(lambda: metrics.clever(net, x[:k], shape, C, s["high"], **cs))
    if k:
        cost["clever"] = (t / k, rows_per_input)  # measured: class-gradient rows ART asked for
    scores["clever"] = np.concatenate([cl, np.full(n - k, np.nan)])
    row["clever_collapsed"] = int(np.sum(cl < COLLAPSED))

    (dist, rejected), t = _timed(lambda: attacks.minimal_distance(net, xt, yt, s["high"]))
    cost["minimal_distance_ensemble"] = (t / n, None)
    ens = dist["ensemble"].numpy()
    row["attack_failures"] = int(np.sum(correct & ~np.isfinite(ens)))
    row["attack_rejected_points"] = rejected
    pgd_d, other = dist["pgd_bisection"].numpy(), np.minimum(dist["fmn"].numpy(), dist["deepfool_line_search"].numpy())
    row["pgd_improved"] = int(np.sum(correct & (pgd_d < other * (1 - 1e-6))))
    t = time.perf_counter()
    single_l2, _ = attacks.robust_accuracies(net, xt, yt, s["l2"], "l2", restarts=1)
    single_linf, strong_linf = attacks.robust_accuracies(net, xt, yt, s["linf"], "linf")
    row["robust_accuracy_seconds"] = time.perf_counter() - t
    row["robust_accuracy_pgd40"] = {
        "l2": {str(e): a for e, a in single_l2.items()}, "linf": {str(e): a for e, a in single_linf.items()}
    }  # fmt: skip
    row["robust_accuracy"] = {
        "l2": {str(e): float(np.mean(correct & (ens > e))) for e in s["l2"]},
        "linf": {str(e): a for e, a in strong_linf.items()},
    }
    row.update(
        bound=bound,
        cost={k: {"seconds_per_input": v[0], "model_calls_per_input": v[1]} for k, v in cost.items()},
        per_input={
            "correct": correct.tolist(),
            "minimal_l2_distance": _list(ens),
            **{f"distance_{a}": _list(d.numpy()) for a, d in dist.items() if a != "ensemble"},
            **{k: _list(v) for k, v in scores.items()},
        },
    )
    ok = correct & np.isfinite(ens)
    row["certified_radius_violations"] = {
        r: int(np.sum(scores[r][ok] > ens[ok] * (1 + 1e-6))) for r in ("certified_radius", "certified_radius_pair")
        if r in scores
    }  # fmt: skip
    row["seconds"] = time.perf_counter() - t_model
    return row


def versions():
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    for pkg in ("fimaudit", "torch", "numpy", "scipy", "scikit-learn", "adversarial-robustness-toolbox", "onnx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _list(a):
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=np.float64)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two models, a dozen inputs (a smoke test, not a study)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--boots", type=int, default=1000)
    ap.add_argument(
        "--rows",
        help="a JSON-lines file of finished models: those already in it are read back instead of rerun, new ones "
        "are appended (resume an interrupted run, or redo only the statistics)",
    )
    ap.add_argument("--part", help="i/k: run only the models whose index is i modulo k (split a run over processes)")
    ap.add_argument("--models", help="comma-separated model names or name prefixes: run only those")
    ap.add_argument("--rows-only", action="store_true", help="train nothing: the statistics of the models in --rows")
    args = ap.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batched models: one thread is as fast, and the numbers don't depend on it
    warnings.simplefilter("ignore")
    family = [f for f in zoo.FAMILY if f[0] in QUICK] if args.quick else zoo.FAMILY
    if args.part:
        i, k = map(int, args.part.split("/"))
        family = family[i::k]
    if args.models:
        family = [f for f in family if any(f[0].startswith(m) for m in args.models.split(","))]
    t0 = time.perf_counter()
    done = {}
    if args.rows and os.path.exists(args.rows):
        with open(args.rows) as f:
            done = {r["name"]: r for r in map(json.loads, f)}
    if args.rows_only:
        family = [f for f in family if f[0] in done]
    rows = []
    try:
        for spec in family:
            if spec[0] in done:
                rows.append(done[spec[0]])
                continue
            rows.append(run_model(*spec, quick=args.quick))
            if args.rows:
                with open(args.rows, "a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
            r = rows[-1]
            print(
                f"{r['name']:34s} clean {r['clean_accuracy']:.3f}  attack failures {r['attack_failures']}  "
                f"[{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )
        boots = 50 if args.quick else args.boots
        result = {
            "settings": SETTINGS,
            "clever": CLEVER,
            "attacks": {
                "steps": attacks.STEPS,
                "restarts": attacks.RESTARTS,
                "bisections": attacks.BISECTIONS,
                "fmn_steps": attacks.FMN_STEPS,
                "deepfool_steps": attacks.DEEPFOOL_STEPS,
            },  # fmt: skip
            "quick": args.quick,
            "torch": torch.__version__,
            "versions": versions(),
            "seeds": "data split random_state=0, mnist1d generator seed 0; per model torch.manual_seed(seed) before "
            "initialisation and train(seed=seed) (0 unless the model sets it); attacks seed 0; CLEVER "
            "np.random.seed(0)",
            "threads": torch.get_num_threads(),
            "models": rows,
        }
        result.update(analysis.analyse(rows, SETTINGS, boots))
        result["seconds"] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "validation.json"), "w") as f:
        json.dump(result, f, indent=1)
    draw(result, os.path.join(args.out, "validation.svg"))
    report.report(result)
    return result


def draw(result, path):
    panels = []
    for ds in SETTINGS:
        rs = [r for r in result["models"] if r["dataset"] == ds]
        if not rs:
            continue
        for key, label in (("lambda_whitebox", "log10 λ_max(F(x))"), ("first_order", "log10 first-order distance d₁")):
            groups = []
            for r in rs:
                p = r["per_input"]
                keep = np.array(p["correct"])
                groups.append(
                    (r["name"], np.log10(analysis.arr(p[key])[keep]), analysis.arr(p["minimal_l2_distance"])[keep])
                )
            panels.append(
                lambda ox, oy, g=groups, ds=ds, label=label: figure.scatter(
                    ox, oy, g, f"{ds}: per input (colour = model)", label, "minimal ℓ2 adversarial distance"
                )
            )
    for ds, res in result["per_input"].items():
        rows = [(k, v["censored"]["value"], *v["censored"]["clustered"]) for k, v in res["scores"].items()]
        rows = [r for r in rows if r[1] is not None]
        panels.append(
            lambda ox, oy, rows=rows, ds=ds: figure.bars(
                ox, oy, rows, f"{ds}: score vs minimal distance, pooled (model-clustered CI)"
            )
        )
    figure.write(path, panels)


if __name__ == "__main__":
    main()
