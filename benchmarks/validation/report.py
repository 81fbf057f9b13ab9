"""The tables of the validation study, printed from ``validation.json``'s content (markdown)."""

import numpy as np

from .analysis import SCORES, SIGN, arr


def _v(x, f="+.2f"):
    return "n/a" if x is None else format(x, f)


def _ci(c, kind):
    lo, hi = c.get(kind, [None, None])
    return "n/a" if lo is None else f"[{lo:+.2f}, {hi:+.2f}]"


def _w(w):
    return "n/a" if w["median"] is None else f"{w['median']:+.2f} [{w['min']:+.2f}, {w['max']:+.2f}] ({w['models']})"


def _med(vals, f=".2g"):
    vals = [v for v in vals if v is not None]
    return format(float(np.median(vals)), f) if vals else ""


def models_table(result):
    print("Models: accuracy on the scored inputs; attacks (all correct inputs attacked; failures = no attack found")
    print("a point within any radius tried); robust accuracy of single-start PGD-40 vs the stronger attacks at the")
    print("second ε of each grid; λ_max / seed estimator (median over inputs); CLEVER's collapsed fits")
    print(
        "| model | clean | attack failures | PGD found closer | rejected points | ℓ2 robust acc. PGD-40 → strong | "
        "ℓ∞ robust acc. PGD-40 → strong | λ_max / seed est. | L | L_h (features) | certified radius > distance "
        "(whole, pair) | CLEVER collapsed | train s |"
    )
    print("|---" * 13 + "|")
    for r in result["models"]:
        s = result["settings"][r["dataset"]]
        e2, ei = str(s["l2"][1]), str(s["linf"][1])
        p = r["per_input"]
        ratio = arr(p["lambda_whitebox"]) / arr(p["seed_estimator"])
        b = r["bound"]
        print(
            f"| {r['name']} | {r['clean_accuracy']:.3f} | {r['attack_failures']} | {r['pgd_improved']} | "
            f"{sum(r['attack_rejected_points'].values())} | "
            f"{r['robust_accuracy_pgd40']['l2'][e2]:.2f} → {r['robust_accuracy']['l2'][e2]:.2f} | "
            f"{r['robust_accuracy_pgd40']['linf'][ei]:.2f} → {r['robust_accuracy']['linf'][ei]:.2f} | "
            f"{np.nanmedian(ratio):.3g} | {_v(b['lipschitz'], '.3g')} | {_v(b.get('lipschitz_features'), '.3g')} | "
            f"{', '.join(str(v) for v in r['certified_radius_violations'].values()) or 'n/a'} | "
            f"{r['clever_collapsed']} of {np.isfinite(arr(p['clever'])).sum()} | {r['train_seconds']:.0f} |"
        )


def pooled_table(result, ds, res):
    rs = [r for r in result["models"] if r["dataset"] == ds]
    print(
        f"\n{ds}: per input, score vs minimal ℓ2 adversarial distance, Spearman ρ pooled over {len(rs)} models "
        f"(correct inputs; {res['censored_inputs']} with no adversarial found are censored at {res['ceiling']:.3g}, "
        "or excluded); 95% bootstrap CIs, i.i.d. over inputs and two-stage over models then inputs"
    )
    print(
        "| score | expected sign | pooled ρ (n) | CI i.i.d. | CI model-clustered | pooled ρ, censored excluded "
        "(clustered CI) | within-model ρ median [min, max] (models) | ranks better than λ_max within | "
        "s / input | model calls / input |"
    )
    print("|---" * 10 + "|")
    for k in SCORES:
        v = res["scores"][k]
        c, x = v["censored"], v["excluded"]
        costs = [r["cost"][k] for r in rs if k in r["cost"]]
        calls = _med([c_["model_calls_per_input"] for c_ in costs], ".0f")
        sec = _med([c_["seconds_per_input"] for c_ in costs])
        print(
            f"| {k} | {'−' if SIGN[k] < 0 else '+'} | {_v(c['value'])} ({c['n']}) | {_ci(c, 'iid')} | "
            f"{_ci(c, 'clustered')} | {_v(x['value'])} {_ci(x, 'clustered')} | {_w(v['within_model'])} | "
            f"{v['better_than_lambda_within']} of {v['within_model']['models']} | {sec} | {calls} |"
        )


def partial_table(ds, res):
    print(f"\n{ds}: partial Spearman ρ with the minimal distance, given a second score (pooled and within a model)")
    print(
        "| score given | pooled partial ρ | CI i.i.d. | CI model-clustered | within-model median [min, max] (models) |"
    )
    print("|---" * 5 + "|")
    for k, v in res["partial"].items():
        c = v["pooled"]
        print(f"| {k} | {_v(c['value'])} | {_ci(c, 'iid')} | {_ci(c, 'clustered')} | {_w(v['within_model'])} |")


def clever_table(ds, res):
    print(
        f"\n{ds}: on CLEVER's inputs only (the first inputs of each model), Spearman ρ with the minimal distance; "
        "CLEVER's fits below 1e-3 are collapsed"
    )
    print(
        "| score | pooled ρ (n) | CI model-clustered | pooled ρ without collapsed fits (n) | "
        "within-model median [min, max] (models) |"
    )
    print("|---" * 5 + "|")
    for k in SCORES:
        v = res["scores"][k]
        a, f = v["on_clever_inputs"], v["on_clever_inputs_fitted"]
        print(
            f"| {k} | {_v(a['value'])} ({a['n']}) | {_ci(a, 'clustered')} | {_v(f['value'])} ({f['n']}) | "
            f"{_w(v['within_model_on_clever_inputs'])} |"
        )


def per_model_table(ds, res):
    keys = list(next(iter(res.values())).keys())
    print(
        f"\n{ds}: per model, Spearman ρ of each score's median or mean over inputs with the stronger attacks' robust "
        "accuracy (95% bootstrap CI over models); robust models: low sensitivity (ρ < 0), large radius (ρ > 0)"
    )
    print("| model-level score | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for label, v in res.items():
        print(f"| {label} | " + " | ".join(f"{_v(v[e]['value'])} {_ci(v[e], 'iid')}" for e in keys) + " |")


def seeds_table(result):
    if not result.get("seeds"):
        return
    print(
        "\nModels that differ only by seed: median λ_max and d₁ over correct inputs, clean accuracy, ℓ2 robust "
        "accuracy (stronger attacks) at the second ε; last row of each group: the range over the dataset's family"
    )
    keys = None
    for base, g in result["seeds"].items():
        if keys is None:
            keys = [k for k in g["models"][0] if k != "name"]
            print("| model | " + " | ".join(k.replace("l2 robust accuracy", "ℓ2 robust acc.") for k in keys) + " |")
            print("|---" * (len(keys) + 1) + "|")
        for m in g["models"]:
            print(f"| {m['name']} | " + " | ".join(f"{m[k]:.3g}" for k in keys if k in m) + " |")
        fam = g["family range"]
        print(f"| (family of {base.split('/')[0]}) | " + " | ".join(
            f"{fam[k][0]:.3g} – {fam[k][1]:.3g}" for k in fam) + " |")  # fmt: skip


def radius_table(result):
    rows = [r for r in result["models"] if "local_certified_radius" in r]
    if not rows:
        return
    print(
        "\nLocal certified ℓ2 radius r (fimaudit.certified_radius: CROWN margin bounds on ℓ2 balls in [0, 1]^d) vs the "
        "minimal ℓ2 distance d the attack ensemble finds, on the first correctly classified scored inputs of each "
        "model, trained again (same weights as the study's: its predictions and first-order distances within 1e-4); "
        "d on the retrained model, and the study's d on the same inputs; violations: r > d (retrained; study's where "
        "the weights are the same); compared: inputs broken by the attacks and classified correctly once retrained"
    )
    print(
        "| model | same weights | compared | median r | median d | study's median d | median d / median r | "
        "median d / r | max d / r | violations | s / input | note |"
    )
    print("|---" * 12 + "|")
    for r in rows:
        c = r["local_certified_radius"]
        note = (
            ([f"refused: {c['refused']}"] if c["refused"] else [])
            + ([] if c["global_cap"] in (True, None) else ["no global bound"])
            + (["CROWN's ReLU slopes (not optimised)"] if c.get("alpha", 20) == 0 else [])
            + ([f"branch and bound, {c['branches']} subdomains per ball"] if c.get("branches") else [])
            + ([f"{c['zero_radius']} radii 0"] if c["zero_radius"] else [])
            + ([f"{c['unbroken']} unbroken"] if c["unbroken"] else [])
            + ([f"{c['misclassified_retrained']} misclassified once retrained"] if c["misclassified_retrained"] else [])
        )
        study = "n/a" if c["violations_study"] is None else c["violations_study"]
        print(
            f"| {r['name']} | {'yes' if c['reproduced'] else 'no'} | {c['compared']} of {c['inputs']} | "
            f"{_v(c['median_radius'], '.3g')} | {_v(c['median_distance'], '.3g')} | "
            f"{_v(c['median_distance_study'], '.3g')} | {_v(c['ratio_of_medians'], '.3g')} | "
            f"{_v(c['median_ratio'], '.3g')} | {_v(c['max_ratio'], '.3g')} | {c['violations']}; {study} | "
            f"{c['seconds_per_input']:.1f} | {'; '.join(note)} |"
        )


def report(result):
    models_table(result)
    for ds, res in result["per_input"].items():
        pooled_table(result, ds, res)
        partial_table(ds, res)
        clever_table(ds, res)
    for ds, res in result["per_model"].items():
        per_model_table(ds, res)
    seeds_table(result)
    radius_table(result)
    print(f"\ntotal {result['seconds']:.0f} s")
