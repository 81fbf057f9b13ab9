"""The local certified ℓ2 radius next to the attacks' distance, per model, without rerunning the study:

    python -m benchmarks.validation.radius --rows radius.jsonl [--part i/k] [--models a,b] [--inputs 10]
    python -m benchmarks.validation.radius --rows radius.jsonl --merge > results/validation_cpu.txt

Training is deterministic (``train``), so each model of ``zoo.FAMILY`` is trained again exactly as
``__main__.run_model`` trains it. On the first ``--inputs`` scored inputs the study classified
correctly it computes ``fimaudit.certified_radius`` r (CROWN margin bounds on ℓ2 balls intersected
with the input box [0, 1]^d, and the local Lipschitz route; the global bound caps it where the global
rules take the graph) and runs the study's minimal-distance ensemble (``attacks.minimal_distance``,
every point verified) on the retrained model, so r and the distance d belong to the same weights: a
float32 kernel of another CPU may round differently, and training can amplify that. A row records
whether the retrained model gives the stored predictions and first-order distances (to ``REPRODUCED``
relative); only then are r also compared with the study's stored distances. One JSON line per model
goes to ``--rows`` (resumable; ``--part`` splits the models, cheapest first, over processes);
``--merge`` writes per-input radii and retrained distances (None where not computed) and a per-model
summary into ``validation.json`` and prints the report: medians of r and d over the compared inputs
(broken by the attacks, classified correctly once retrained), the median and maximum of d / r, and the
violations r > d·(1 + ``TOLERANCE``) — a certified radius above a verified adversarial distance would
be a defect of the bound. Since d ≥ the true minimal distance ≥ r, d / r bounds the looseness of r
from above.
"""

import argparse
import copy
import json
import os
import time
import warnings

import numpy as np
import torch

import fimaudit as fa
from fimaudit.errors import UnsupportedOnnxOpError

from . import attacks, data, metrics, report, train, zoo
from .__main__ import SETTINGS

ITERATIONS = 5  # log-bisection steps of certified_radius after doubling/halving: the radius to 2^(1/32), ~2 %
REPRODUCED = 1e-4  # relative: first-order distances of the retrained model vs the stored ones (float32 kernels
# may round differently on another CPU of the same type family: same predictions, logits equal to ~1e-5)
ALPHA = 20  # ascent steps on the ReLU lower slopes (certified_radius's default; rows without "alpha" used it)
TOLERANCE = 1e-6  # relative: a radius above the distance by more than this is a violation
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def retrain(ds, arch, width, opts, cache=None):
    """The study's model, trained again as ``__main__.run_model`` trains it, with its data; with
    ``cache`` (a file path) the weights are read from it when it exists and written to it after
    training, so a second pass over the same model (another bound, the attack alone) trains nothing."""
    s = SETTINGS[ds]
    Xtr, ytr, Xte, yte, shape = data.load(ds)
    torch.manual_seed(opts.get("seed", 0))
    net = zoo.build(arch, shape, int(ytr.max()) + 1, Xtr.mean(0), Xtr.std(0), width)
    if cache is not None and os.path.exists(cache):
        net.load_state_dict(torch.load(cache))
        net.eval()
    else:
        train.train(net, Xtr, ytr, **{"epochs": s["epochs"], **opts})
        if cache is not None:
            torch.save(net.state_dict(), cache)
    return net, Xte[: s["inputs"]], yte[: s["inputs"]], shape


def _cache(folder, name):
    return None if folder is None else os.path.join(folder, name.replace("/", "__") + ".pt")


def margins(net, x):
    """Top-1 minus runner-up logit in float64, as the study's exact pass computes them."""
    with torch.no_grad():
        z = np.sort(copy.deepcopy(net).double()(torch.from_numpy(x.astype(np.float64))).numpy(), axis=1)
    return z[:, -1] - z[:, -2]


def _rel(a, b):
    b = np.array([np.nan if v is None else v for v in b], dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-12))) if ok.any() else 0.0


def attack(net, x, y, idx, ds):
    """The study's minimal-distance ensemble (every point verified) on inputs ``idx`` of the given model."""
    if not idx:
        return []
    dist, _ = attacks.minimal_distance(net, torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), SETTINGS[ds]["high"])
    return [float(v) if np.isfinite(v) else None for v in dist["ensemble"].numpy()]


def run_model(spec, stored, k, weights=None, alpha=ALPHA, branches=0):
    """One JSON row: the reproduction check and the certified radius on the first k correct inputs
    (``alpha`` ascent steps on the ReLU lower slopes, 0: CROWN's own; ``branches`` subdomains of
    branch and bound per refused ball, 0: none)."""
    name, ds, arch, width, opts = spec
    t0 = time.perf_counter()
    net, x, y, shape = retrain(ds, arch, width, opts, _cache(weights, name))
    p = stored["per_input"]
    with torch.no_grad():
        correct = (net(torch.from_numpy(x)).argmax(1).numpy() == y).tolist()
    row = dict(
        name=name,
        train_seconds=time.perf_counter() - t0,
        same_predictions=correct == p["correct"],
        margin_max_relative_difference=_rel(margins(net, x), p["margin"]),
        first_order_max_relative_difference=_rel(metrics.first_order_distance(net, x), p["first_order"]),
        iterations=ITERATIONS,
        alpha=alpha,
        branches=branches,
    )
    row["reproduced"] = row["same_predictions"] and row["first_order_max_relative_difference"] <= REPRODUCED
    idx = [int(i) for i in np.flatnonzero(p["correct"])[:k]]
    row["indices"], row["refused"] = idx, None
    X = x[idx].astype(np.float64)
    t = time.perf_counter()
    kw = dict(iterations=ITERATIONS, input_domain=(0.0, 1.0), alpha=alpha, branches=branches)
    try:
        r = fa.certified_radius(fa.wrap(net, input_shape=shape), X, **kw)
        row["global_cap"] = True
    except UnsupportedOnnxOpError as err:  # maybe no global bound for the graph: the local bounds alone
        row["error_with_global_cap"] = str(err)
        try:
            r = fa.certified_radius(fa.wrap(net, input_shape=shape), X, global_cap=False, **kw)
            row["global_cap"] = False
        except UnsupportedOnnxOpError as err2:
            r, row["refused"] = None, str(err2)
    row["radius_seconds_per_input"] = (time.perf_counter() - t) / max(len(idx), 1)
    row["radius"] = None if r is None else [float(v) for v in r]
    row["attack_distance"] = attack(net, x, y, idx, ds)
    return row


def summary(model, row):
    """Per-input radii aligned with the scored inputs and the per-model comparison with the distance."""
    n = len(model["per_input"]["correct"])
    radii = [None] * n
    for i, v in zip(row["indices"], row["radius"] or []):
        radii[i] = v
    d, rs = row["attack_distance"], row["radius"] or []
    study = [model["per_input"]["minimal_l2_distance"][i] for i in row["indices"]]
    # compared: inputs the attacks broke (d None: none found) and the retrained model classifies correctly (d = 0:
    # it does not, and the radius is then one of the wrong class)
    keep = [j for j in range(len(rs)) if d[j] is not None and d[j] > 0]
    r_, d_ = np.array([rs[j] for j in keep], dtype=np.float64), np.array([d[j] for j in keep], dtype=np.float64)
    bad = [row["indices"][j] for j in keep if rs[j] > d[j] * (1 + TOLERANCE)]
    both = [j for j in keep if study[j] is not None]
    out = dict(
        inputs=len(row["indices"]),
        compared=len(keep),
        misclassified_retrained=sum(v == 0 for v in d),
        unbroken=sum(v is None for v in d),
        reproduced=row["reproduced"],
        refused=row["refused"],
        global_cap=row.get("global_cap"),
        iterations=row["iterations"],
        alpha=row.get("alpha", ALPHA),
        branches=row.get("branches", 0),
        seconds_per_input=row["radius_seconds_per_input"],
        violations=len(bad),
        violating_inputs=bad,
        median_radius=_median(r_),
        median_distance=_median(d_),
        median_ratio=_median(d_ / np.maximum(r_, 1e-300)),
        max_ratio=float(np.max(d_ / np.maximum(r_, 1e-300))) if keep else None,
        zero_radius=int(np.sum(r_ <= 0)),
        median_distance_study=_median([study[j] for j in both]),
        violations_study=sum(rs[j] > study[j] * (1 + TOLERANCE) for j in both) if row["reproduced"] else None,
    )
    out["ratio_of_medians"] = out["median_distance"] / out["median_radius"] if keep and out["median_radius"] else None
    return radii, out


def _median(v):
    return float(np.median(v)) if len(v) else None


def merge(result, rows):
    """Write each row's radii and summary into the study's result dict (in place) and return it."""
    by_name = {r["name"]: r for r in rows}
    for model in result["models"]:
        row = by_name.get(model["name"])
        if row is None:
            continue
        radii, out = summary(model, row)
        model["per_input"]["local_certified_radius"] = radii
        model["per_input"]["attack_distance_retrained"] = [None] * len(radii)
        for i, v in zip(row["indices"], row["attack_distance"]):
            model["per_input"]["attack_distance_retrained"][i] = v
        model["local_certified_radius"] = out
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", required=True, help="JSON-lines file: finished models are skipped, new ones appended")
    ap.add_argument("--part", help="i/k: only the models whose index is i modulo k")
    ap.add_argument("--models", help="comma-separated model names or name prefixes")
    ap.add_argument("--inputs", type=int, default=20, help="correctly classified scored inputs per model (first k)")
    ap.add_argument("--merge", action="store_true", help="merge --rows into validation.json instead of computing")
    ap.add_argument("--json", default=os.path.join(RESULTS, "validation.json"))
    ap.add_argument("--alpha", type=int, default=ALPHA, help="ascent steps on the ReLU lower slopes (0: CROWN's)")
    ap.add_argument("--branches", type=int, default=0, help="branch-and-bound subdomains per refused ball (0: none)")
    ap.add_argument("--weights", help="folder for the retrained weights: read when there, else written (--train-only)")
    ap.add_argument("--train-only", action="store_true", help="only retrain the selected models into --weights")
    args = ap.parse_args(argv)
    with open(args.json) as f:
        result = json.load(f)
    done = []
    if os.path.exists(args.rows):
        with open(args.rows) as f:
            done = [json.loads(line) for line in f if line.strip()]
    if args.merge:
        merge(result, done)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        report.report(result)  # the study's tables with the radius table last (validation_cpu.txt)
        return result
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    stored = {m["name"]: m for m in result["models"]}
    family = sorted(zoo.FAMILY, key=lambda f: (f[2] == "attention", stored[f[0]]["train_seconds"]))  # cheapest first
    if args.part:
        i, k = map(int, args.part.split("/"))
        family = family[i::k]
    if args.models:
        family = [f for f in family if any(f[0].startswith(m) for m in args.models.split(","))]
    if args.weights:
        os.makedirs(args.weights, exist_ok=True)
    if args.train_only:
        for spec in family:
            t = time.perf_counter()
            retrain(*spec[1:], _cache(args.weights, spec[0]))
            print(f"{spec[0]:34s} weights ready in {time.perf_counter() - t:.0f} s", flush=True)
        return None
    rows = {r["name"]: r for r in done}  # the last line of a model counts
    for spec in family:
        row = rows.get(spec[0])
        if row is not None and "attack_distance" in row:
            continue
        if row is not None:  # a row written before the attack was part of the step: the attack only
            net, x, y, _ = retrain(*spec[1:], _cache(args.weights, spec[0]))
            row["attack_distance"] = attack(net, x, y, row["indices"], spec[1])
        else:
            row = run_model(spec, stored[spec[0]], args.inputs, args.weights, args.alpha, args.branches)
        with open(args.rows, "a") as f:
            f.write(json.dumps(row) + "\n")
        med = "refused" if row["radius"] is None else f"median radius {np.median(row['radius']):.4g}"
        secs = f"{row['radius_seconds_per_input']:.1f} s/input  train {row['train_seconds']:.0f} s"
        print(f"{row['name']:34s} reproduced {row['reproduced']}  {med}  {secs}", flush=True)


if __name__ == "__main__":
    main()
