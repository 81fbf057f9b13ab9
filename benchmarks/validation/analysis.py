"""The study's statistics from the per-input numbers of every model.

Per input (pooled over a dataset's models, correctly classified inputs): Spearman's ρ of
every score with the minimal adversarial distance, with an i.i.d. and a model-clustered
bootstrap interval (``stats``); inputs where every attack failed are censored — set to the
largest radius tried (above every distance found) or excluded, both reported. Within each
model: the same ρ, and in how many models a score ranks better than λ_max (ρ's sign taken as
expected: sensitivities negative, radii positive). The partial ρ of λ_max given the margin
(and given d₁) says whether λ_max carries information the margin does not. On CLEVER's inputs
only: every score's ρ on the same inputs, with and without CLEVER's collapsed fits.
Per model: Spearman's ρ of each score's median and mean over inputs with the robust accuracy of
the stronger attacks at every ε.
"""

import numpy as np

from . import stats

SENSITIVITY = ["lambda_whitebox", "lambda_blackbox", "trace", "gradient_norm", "seed_estimator"]
RADII = ["first_order", "margin", "certified_radius", "certified_radius_pair", "clever"]
SCORES = SENSITIVITY + RADII
SIGN = {**{k: -1.0 for k in SENSITIVITY}, **{k: 1.0 for k in RADII}}
COLLAPSED = 1e-3


def arr(v):
    return np.array([np.nan if a is None else a for a in v], dtype=np.float64)


def _pool(rs, key):
    return np.concatenate([arr(r["per_input"].get(key, [None] * len(r["per_input"]["correct"]))) for r in rs])


def _within(rs, key, dist, keep, given=None):
    vals, start = [], 0
    for r in rs:
        m = len(r["per_input"]["correct"])
        sl = slice(start, start + m)
        start += m
        a = _pool([r], key)[keep[sl]]
        g = None if given is None else _pool([r], given)[keep[sl]]
        c = stats.correlation(a, dist[sl][keep[sl]], given=g, boots=0)["value"] if key in r["per_input"] else None
        vals.append(c)
    return vals


def _summary(vals):
    v = np.array([x for x in vals if x is not None])
    if v.size == 0:
        return {"median": None, "min": None, "max": None, "models": 0}
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "models": int(v.size)}


def per_input(rs, high, boots):
    correct = np.concatenate([np.array(r["per_input"]["correct"], dtype=bool) for r in rs])
    groups = np.concatenate([np.full(len(r["per_input"]["correct"]), i) for i, r in enumerate(rs)])
    d = _pool(rs, "minimal_l2_distance")
    ceiling = max(high, float(np.nanmax(np.where(np.isfinite(d), d, np.nan)))) * 1.01
    variants = {"censored": np.where(np.isfinite(d), d, ceiling), "excluded": np.where(np.isfinite(d), d, np.nan)}
    clever = _pool(rs, "clever")
    on_clever = correct & np.isfinite(clever)
    fitted = on_clever & (clever >= COLLAPSED)
    out = {"ceiling": ceiling, "censored_inputs": int(np.sum(correct & ~np.isfinite(d))), "scores": {}}
    lam_within = _within(rs, "lambda_whitebox", variants["censored"], correct)
    for key in SCORES:
        a = _pool(rs, key)
        res = {}
        for name, dist in variants.items():
            if name == "excluded" and not out["censored_inputs"]:  # nothing censored: the same numbers
                res[name] = res["censored"]
                continue
            res[name] = stats.correlation(a[correct], dist[correct], groups=groups[correct], boots=boots)
        w = _within(rs, key, variants["censored"], correct)
        res["within_model"] = {**_summary(w), "values": w}
        res["better_than_lambda_within"] = int(
            sum(1 for u, v in zip(w, lam_within) if u is not None and v is not None and SIGN[key] * u > -v)
        )
        dc = variants["censored"]
        res["on_clever_inputs"] = stats.correlation(a[on_clever], dc[on_clever], groups=groups[on_clever], boots=boots)
        res["on_clever_inputs_fitted"] = stats.correlation(a[fitted], dc[fitted], groups=groups[fitted], boots=boots)
        res["within_model_on_clever_inputs"] = _summary(_within(rs, key, dc, on_clever))
        out["scores"][key] = res
    dc, lam = variants["censored"], _pool(rs, "lambda_whitebox")
    out["partial"] = {}
    for given in ("margin", "first_order"):
        z = _pool(rs, given)
        out["partial"][f"lambda_whitebox given {given}"] = {
            "pooled": stats.correlation(
                lam[correct], dc[correct], groups=groups[correct], given=z[correct], boots=boots
            ),
            "within_model": _summary(_within(rs, "lambda_whitebox", dc, correct, given=given)),
        }
    fo = _pool(rs, "first_order")
    out["partial"]["first_order given margin"] = {
        "pooled": stats.correlation(
            fo[correct], dc[correct], groups=groups[correct], given=_pool(rs, "margin")[correct], boots=boots
        ),  # fmt: skip
        "within_model": _summary(_within(rs, "first_order", dc, correct, given="margin")),
    }
    return out


def _model_level(r, key, how):
    if key == "graph_bound_L":
        return r["bound"]["lipschitz"] or np.nan
    v = arr(r["per_input"].get(key, [None]))
    if not np.isfinite(v).any():
        return np.nan
    return float(np.nanmedian(v) if how == "median" else np.nanmean(v))


def per_model(rs, settings, boots):
    out = {}
    for key in SCORES + ["graph_bound_L"]:
        for how in ("median", "mean") if key != "graph_bound_L" else ("one",):
            s = np.array([_model_level(r, key, how) for r in rs])
            label = key if key == "graph_bound_L" else f"{how} {key}"
            out[label] = {
                f"{nm}@{e}": stats.correlation(s, [r["robust_accuracy"][nm][str(e)] for r in rs], boots=boots)
                for nm in ("l2", "linf")
                for e in settings[nm]
            }
    return out


def seed_groups(rows, settings):
    """Models that differ only by seed (``name``, ``name-s1``, ...): per model the median λ_max and d₁
    over correct inputs, clean accuracy and the stronger attacks' ℓ2 robust accuracy at the grid's
    second ε; and, for comparison, the same medians' range over the dataset's whole family."""

    def base(r):
        return r["name"].rsplit("-s", 1)[0] if r["train"].get("seed") else r["name"]

    seeded = {base(r) for r in rows if r["train"].get("seed")}
    out = {}
    for r in rows:
        if base(r) in seeded:
            out.setdefault(base(r), []).append(r)

    def level(r):
        keep, p = np.array(r["per_input"]["correct"]), r["per_input"]
        e = str(settings[r["dataset"]]["l2"][1])  # the ε differs by dataset: the key names its place in the grid
        return {
            "name": r["name"],
            "median lambda_whitebox": float(np.nanmedian(arr(p["lambda_whitebox"])[keep])),
            "median first_order": float(np.nanmedian(arr(p["first_order"])[keep])),
            "clean_accuracy": r["clean_accuracy"],
            "l2 robust accuracy at the second ε": r["robust_accuracy"]["l2"][e],
        }

    res = {}
    for base, rs in out.items():
        fam = [level(r) for r in rows if r["dataset"] == rs[0]["dataset"]]
        res[base] = {
            "models": [level(r) for r in rs],
            "family range": {
                k: [min(f[k] for f in fam), max(f[k] for f in fam)] for k in fam[0] if k != "name"
            },  # fmt: skip
        }
    return res


def analyse(rows, settings, boots):
    result = {"per_input": {}, "per_model": {}, "seeds": seed_groups(rows, settings)}
    for ds in settings:
        rs = [r for r in rows if r["dataset"] == ds]
        if not rs:
            continue
        result["per_input"][ds] = per_input(rs, settings[ds]["high"], boots)
        if len(rs) >= 3:
            result["per_model"][ds] = per_model(rs, settings[ds], boots)
    return result
