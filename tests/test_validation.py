"""The validation study's pipeline on a tiny configuration (two models, a dozen inputs): it
runs end to end, writes its JSON and figure, and its numbers obey what must hold whatever the
models — a certified radius never exceeds the distance an attack actually found, robust
accuracy falls as ε grows, and fimaudit's white-box and black-box λ_max agree."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("art")
pytest.importorskip("sklearn")
pytest.importorskip("fimaudit_torch")


def test_quick_study_runs_and_is_consistent(tmp_path):
    from benchmarks.validation.__main__ import main

    result = main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["quick"] and len(saved["models"]) == 2
    ET.parse(tmp_path / "validation.svg")  # well-formed SVG
    for row in result["models"]:
        p = row["per_input"]
        wb = np.array(p["lambda_whitebox"], dtype=float)
        bb = np.array(p["lambda_blackbox"], dtype=float)
        assert np.allclose(bb, wb, rtol=0.05)
        for _norm, accs in row["robust_accuracy"].items():
            vals = [accs[e] for e in sorted(accs, key=float)]
            assert all(a >= b - 1e-12 for a, b in zip(vals, vals[1:])) and vals[0] <= row["clean_accuracy"] + 1e-12
        if row["bound"]["lipschitz"] is not None:
            assert row["certified_radius_violations"] == 0
    for _ds, table in result["per_input"].items():
        c = table["lambda_whitebox"]["spearman"]
        assert c["n"] >= 3 and c["low"] <= c["value"] <= c["high"]
