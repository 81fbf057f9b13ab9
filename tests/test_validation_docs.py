"""docs/validation.md quotes the committed study: the numbers its statements cite are the ones in
``benchmarks/validation/results/validation.json`` (to the two decimals shown), its tables are
whole blocks of ``validation_cpu.txt``, and the README's summary cites the same numbers."""

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "validation" / "results"
TEXT = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")
DOC = " ".join(TEXT.split())  # prose with its line breaks as single spaces
README = (ROOT / "README.md").read_text(encoding="utf-8")
R = json.loads((RESULTS / "validation.json").read_text(encoding="utf-8"))
NUM = r"([+−-]?\d+(?:\.\d+)?)"


def _num(s):
    return float(s.replace("−", "-"))


def pooled(ds, key, field="value"):
    c = R["per_input"][ds]["scores"][key]["censored"]
    return c[field]


def within(ds, key):
    return R["per_input"][ds]["scores"][key]["within_model"]["median"]


def partial(ds, what, field="value"):
    return R["per_input"][ds]["partial"][what]["pooled"][field]


def models(ds=None):
    return [r for r in R["models"] if ds is None or r["dataset"] == ds]


# (a regular expression whose groups are numbers in the docs, the JSON values they state)
def ci(ds, key):
    return pooled(ds, key, "clustered")


def better(ds, key="first_order"):
    v = R["per_input"][ds]["scores"][key]
    return [v["better_than_lambda_within"], v["within_model"]["models"]]


def worst_within(name):
    ds = name.split("/")[0]
    rs = models(ds)
    i = [r["name"] for r in rs].index(name)
    return [R["per_input"][ds]["scores"][k]["within_model"]["values"][i] for k in ("lambda_whitebox", "first_order")]


def per_model(ds, key, norm="l2"):
    v = R["per_model"][ds][key]
    return [v[f"{norm}@{e}"]["value"] for e in R["settings"][ds][norm]]


DATASETS = ("digits", "breast_cancer", "mnist1d")
GIVEN_D1 = "lambda_whitebox given first_order"
REGULARISED = ["digits/mlp-w256-jacreg", "digits/resnet-jacreg", "mnist1d/mlp-w256-jacreg", "mnist1d/cnn-jacreg",
               "mnist1d/mlp-w256-spectral"]  # fmt: skip
R_ = rf"{NUM} \[{NUM}, {NUM}\]"  # a ρ and its interval
CLAIMS = {
    "models run": (rf"The tables below come from \*\*{NUM} of the 40 models", lambda: [len(models())]),
    "d1 pooled": (
        rf"d₁ has pooled ρ {R_} on digits, {R_} on breast_cancer and {R_} on mnist1d",
        lambda: [x for ds in DATASETS for x in [pooled(ds, "first_order"), *ci(ds, "first_order")]],
    ),
    "lambda pooled": (
        rf"against {R_}, {R_} and {R_} for λ_max",
        lambda: [x for ds in DATASETS for x in [pooled(ds, "lambda_whitebox"), *ci(ds, "lambda_whitebox")]],
    ),
    "d1 better within": (
        rf"in {NUM} of {NUM} digits models, {NUM} of {NUM} breast_cancer models and {NUM} of {NUM} mnist1d",
        lambda: better("digits") + better("breast_cancer") + better("mnist1d"),
    ),
    "lambda within medians": (
        rf"its within-model median ρ is {NUM} \(digits\), {NUM} \(breast_cancer\) and {NUM} \(mnist1d\)",
        lambda: [within(ds, "lambda_whitebox") for ds in DATASETS],
    ),
    "lambda on regularised models": (
        rf"but it is {NUM} on the Jacobian-regularised digits MLP, {NUM} on the Jacobian-regularised residual CNN, "
        rf"{NUM} and {NUM} on mnist1d's Jacobian-regularised MLP and CNN and {NUM} on its spectrally normalised MLP "
        rf"\(near zero or of the wrong sign\), where d₁ has {NUM} to {NUM}",
        lambda: [worst_within(m)[0] for m in REGULARISED]
        + [min(worst_within(m)[1] for m in REGULARISED), max(worst_within(m)[1] for m in REGULARISED)],
    ),
    "accuracy of mnist1d jacreg": (
        rf"classify only {NUM} and {NUM} of the scored inputs correctly",
        lambda: [next(r["clean_accuracy"] for r in models() if r["name"] == m) for m in REGULARISED[2:4]],
    ),
    "per model digits median": (
        rf"its median has it at the two smaller ε only \({NUM}, {NUM}, {NUM}, {NUM}\)",
        lambda: per_model("digits", "median lambda_whitebox"),
    ),
    "partial given margin": (
        rf"given the margin is {NUM} \(digits\), {NUM} \(breast_cancer\) and {NUM} \(mnist1d\)",
        lambda: [partial(ds, "lambda_whitebox given margin") for ds in DATASETS],
    ),
    "partial given d1": (
        rf"given d₁ it is {NUM} \[{NUM}, {NUM}\], {NUM} \[{NUM}, {NUM}\] and {NUM} \[{NUM}, {NUM}\]",
        lambda: [x for ds in DATASETS for x in [partial(ds, GIVEN_D1), *partial(ds, GIVEN_D1, "clustered")]],
    ),
    "iid vs clustered": (
        rf"on digits λ_max's i.i.d. interval is \[{NUM}, {NUM}\], the model-clustered one \[{NUM}, {NUM}\]",
        lambda: pooled("digits", "lambda_whitebox", "iid") + ci("digits", "lambda_whitebox"),
    ),
    "per model digits": (
        rf"at every ℓ2 ε \({NUM}, {NUM}, {NUM}, {NUM}\)",
        lambda: per_model("digits", "mean lambda_whitebox"),
    ),
    "per model digits d1": (
        rf"the mean d₁ gives {NUM}, {NUM}, {NUM}, {NUM}",
        lambda: per_model("digits", "mean first_order"),
    ),
    "censored": (
        rf"{NUM} correctly classified inputs, all of the breast_cancer attention model",
        lambda: [sum(R["per_input"][ds]["censored_inputs"] for ds in R["per_input"])],
    ),
    "pgd improved attention": (
        rf"improved on the closer of FMN and DeepFool for {NUM} of {NUM} inputs of that attention model",
        lambda: [next(r["pgd_improved"] for r in models() if r["name"] == "breast_cancer/attention"), 143],
    ),
    "seeds": (
        rf"digits width-32 MLP has median λ_max {NUM}–{NUM} and median d₁ {NUM}–{NUM}, the mnist1d width-64 "
        rf"MLP {NUM}–{NUM} and {NUM}–{NUM}",
        lambda: seed_range("digits/mlp-w32") + seed_range("mnist1d/mlp-w64"),
    ),
    "clever": (
        rf"{NUM} of {NUM} digits CLEVER scores are collapsed fits; on those digits inputs its pooled ρ is {NUM} "
        rf"\({NUM} without the collapsed fits\) against {NUM} for λ_max and {NUM} for d₁",
        lambda: [sum(r["clever_collapsed"] for r in models("digits")), on_clever("digits", "clever")["n"]]
        + [on_clever("digits", "clever")["value"], on_clever("digits", "clever", "on_clever_inputs_fitted")["value"]]
        + [on_clever("digits", k)["value"] for k in ("lambda_whitebox", "first_order")],
    ),
    "breast_cancer tie": (
        rf"breast_cancer's within-model medians: {NUM} and {NUM}",
        lambda: [within("breast_cancer", "first_order"), within("breast_cancer", "lambda_whitebox")],
    ),
    "gradient norm on mnist1d": (
        rf"norm ranks better than λ_max within {NUM} of {NUM} models \(median {NUM}\)",
        lambda: better("mnist1d", "gradient_norm") + [within("mnist1d", "gradient_norm")],
    ),
}  # fmt: skip


def seed_range(base):
    ms = R["seeds"][base]["models"]
    out = []
    for k in ("median lambda_whitebox", "median first_order"):
        out += [min(m[k] for m in ms), max(m[k] for m in ms)]
    return out


def on_clever(ds, key, which="on_clever_inputs"):
    return R["per_input"][ds]["scores"][key][which]


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_docs_numbers_are_the_json_numbers(name):
    pattern, values = CLAIMS[name]
    m = re.search(pattern, DOC)
    assert m, f"docs/validation.md no longer states {name!r} ({pattern})"
    want = values()
    assert len(m.groups()) == len(want), name
    for text, w in zip(m.groups(), want):
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert abs(_num(text) - w) <= 0.5 * 10**-decimals + 1e-9, f"{name}: docs say {text}, the JSON {w}"


def test_tables_are_whole_blocks_of_the_results_file():
    lines = (RESULTS / "validation_cpu.txt").read_text(encoding="utf-8").splitlines()
    markers = re.findall(r"<!-- results: benchmarks/validation/results/validation_cpu.txt lines=(\d+)-(\d+) -->", TEXT)
    assert len(markers) >= 6
    for a, b in ((int(a), int(b)) for a, b in markers):
        assert 1 <= a <= b <= len(lines)
        assert a == 1 or not lines[a - 2].strip(), f"lines={a}-{b} starts inside a block"
        assert b == len(lines) or not lines[b].strip(), f"lines={a}-{b} ends inside a block"
        assert any(line.startswith("|") for line in lines[a - 1 : b]), f"lines={a}-{b} holds no table"


def test_the_readme_summary_cites_the_docs_numbers():
    summary = next(p for p in README.split("\n\n") if "validation study" in p and "ρ" in p)
    for n in re.findall(r"[+−]\d\.\d\d", summary):
        assert n in DOC, f"the README states {n}, which docs/validation.md does not"
    assert f"{len(models())} " in summary


# the local certified radius (benchmarks/validation/radius.py) against the attacks, per model
def radius_rows(arch=None):
    rows = [r for r in models() if "local_certified_radius" in r and r["local_certified_radius"]["refused"] is None]
    return [r for r in rows if arch is None or r["arch"] in arch]


def loose(limit=3.0):
    """MLP and CNN models whose median distance is more than ``limit`` times their median radius."""
    return {r["name"]: r["local_certified_radius"]["ratio_of_medians"] for r in radius_rows(("mlp", "cnn"))
            if r["local_certified_radius"]["ratio_of_medians"] > limit}  # fmt: skip


def ratio(name):
    return next(r["local_certified_radius"]["ratio_of_medians"] for r in radius_rows() if r["name"] == name)


RADIUS_CLAIMS = {
    "residual MLP": (rf"{NUM} on the residual MLP\)", lambda: [ratio("breast_cancer/resmlp")]),
    "attention": (
        rf"{NUM}× and {NUM}× below the attack distance on the digits ones",
        lambda: [ratio("digits/attention-wd"), ratio("digits/attention")],
    ),
    "residual CNNs": (
        rf"it is {NUM}× and {NUM}× below\n?\s*\(`digits/resnet`, `digits/resnet-jacreg`\)",
        lambda: [ratio("digits/resnet"), ratio("digits/resnet-jacreg")],
    ),
    "misclassified once retrained": (
        rf"misclassify up to {NUM} of the {NUM} inputs",
        lambda: [
            max(r["local_certified_radius"]["misclassified_retrained"] for r in radius_rows()),
            max(r["local_certified_radius"]["inputs"] for r in radius_rows()),
        ],
    ),  # fmt: skip
    "inputs and models": (
        rf"on all {NUM} compared inputs of {NUM} models the radius is at most the attack distance",
        lambda: [sum(r["local_certified_radius"]["compared"] for r in radius_rows()), len(radius_rows())],
    ),
    "reproduced": (
        rf"Retraining here reproduced {NUM} of {NUM} models",
        lambda: [sum(r["local_certified_radius"]["reproduced"] for r in radius_rows()), len(radius_rows())],
    ),
    "within 3x": (
        rf"within 3× of the median radius for {NUM} of {NUM} MLP and CNN models",
        lambda: [len(radius_rows(("mlp", "cnn"))) - len(loose()), len(radius_rows(("mlp", "cnn")))],
    ),
    "ratio range": (
        rf"median d / median r spans {NUM}–{NUM} over the MLPs and CNNs",
        lambda: [
            f(r["local_certified_radius"]["ratio_of_medians"] for r in radius_rows(("mlp", "cnn"))) for f in (min, max)
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(RADIUS_CLAIMS))
def test_docs_radius_numbers_are_the_json_numbers(name):
    pattern, values = RADIUS_CLAIMS[name]
    m = re.search(pattern, DOC)
    assert m, f"docs/validation.md no longer states {name!r} ({pattern})"
    for text, w in zip(m.groups(), values(), strict=True):
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert abs(_num(text) - w) <= 0.5 * 10**-decimals + 1e-9, f"{name}: docs say {text}, the JSON {w}"


def test_docs_name_every_mlp_and_cnn_whose_radius_is_more_than_3x_below_the_distance():
    m = re.search(r"more than 3× below the median distance on (.*?);", DOC)
    assert m, "docs/validation.md no longer lists the loose radii"
    named = {n: float(v) for n, v in re.findall(r"`([\w/-]+)` \(" + NUM + "×\\)", m.group(1))}
    want = loose()
    assert set(named) == set(want)
    for n, v in named.items():
        assert abs(v - want[n]) <= 0.005 + 1e-9, n


def test_no_certified_radius_exceeds_an_attack_distance_input_by_input():
    tol = 1 + 1e-6
    rows = radius_rows()
    assert rows
    for r in rows:
        p = r["per_input"]
        both = [(a, d, s) for a, d, s in zip(p["local_certified_radius"], p["attack_distance_retrained"],
                                             p["minimal_l2_distance"]) if a is not None]  # fmt: skip
        assert len(both) == r["local_certified_radius"]["inputs"]
        assert all(a <= d * tol for a, d, _ in both if d), r["name"]  # d = 0: misclassified once retrained
        if r["local_certified_radius"]["reproduced"]:
            assert all(a <= s * tol for a, _, s in both if s is not None), r["name"]
        assert r["local_certified_radius"]["violations"] == 0


def test_docs_breast_cancer_attention_radius_is_of_the_order_stated():
    assert "about 10⁻¹² on breast_cancer's" in DOC
    r = next(r for r in radius_rows() if r["name"] == "breast_cancer/attention")["local_certified_radius"]
    assert 10**-12.5 <= r["median_radius"] < 10**-11.5
