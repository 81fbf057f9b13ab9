"""The radius step of the validation study: its merge into validation.json against answers worked
out by hand on a tiny case and, as a property, against a brute-force count on random cases (radii
land on their inputs and nowhere else; a violation is an attacked input whose radius exceeds its
distance); and the whole step on a linear classifier, where the exact minimal ℓ2 distance to the
boundary is the closed form min_j (z_y − z_j)/‖w_y − w_j‖ and a certified radius may not exceed it."""

import copy

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from benchmarks.validation import radius  # noqa: E402


def _result(correct, distance, name="m"):
    return {"models": [{"name": name, "per_input": {"correct": correct, "minimal_l2_distance": distance}}]}


def _row(indices, radii, distance, name="m"):
    return dict(name=name, indices=indices, radius=radii, attack_distance=distance, reproduced=True, refused=None,
                global_cap=True, iterations=5, radius_seconds_per_input=0.5)  # fmt: skip


def test_merge_on_a_tiny_case_gives_the_hand_worked_numbers():
    result = _result([True, False, True, True, True, True], [0.5, None, None, 0.3, 0.8, 0.2])
    result["models"].append({"name": "other", "per_input": {"correct": [True], "minimal_l2_distance": [1.0]}})
    untouched = copy.deepcopy(result["models"][1])
    # the attack on the retrained model: input 0 at 0.45 (the study found 0.5), input 2 again unbroken, input 5
    # misclassified by the retrained model (distance 0): neither is compared
    retrained = [0.45, None, 0.3, 0.8, 0.0]
    rows = [_row([0, 2, 3, 4, 5], [0.2, 0.1, 0.31, 0.4, 0.25], retrained), _row([0], [0.1], [1.0], "absent")]
    radius.merge(result, rows)
    m = result["models"][0]
    assert m["per_input"]["local_certified_radius"] == [0.2, None, 0.1, 0.31, 0.4, 0.25]
    assert m["per_input"]["attack_distance_retrained"] == [0.45, None, None, 0.3, 0.8, 0.0]
    c = m["local_certified_radius"]
    # input 3: 0.31 > 0.3, a violation, against both distances
    assert (c["inputs"], c["compared"], c["unbroken"], c["misclassified_retrained"]) == (5, 3, 1, 1)
    assert (c["violations"], c["violating_inputs"], c["violations_study"]) == (1, [3], 1)
    assert c["median_radius"] == 0.31 and c["median_distance"] == 0.45 and c["median_distance_study"] == 0.5
    assert c["median_ratio"] == pytest.approx(2.0) and c["max_ratio"] == pytest.approx(2.25)
    assert c["ratio_of_medians"] == pytest.approx(0.45 / 0.31) and c["zero_radius"] == 0
    assert result["models"][1] == untouched


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_merge_places_every_radius_and_counts_violations_by_brute_force(data):
    n = data.draw(st.integers(1, 12))
    correct = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    dist = data.draw(st.lists(st.one_of(st.none(), st.floats(0.01, 5.0)), min_size=n, max_size=n))
    idx = [i for i in range(n) if correct[i]][: data.draw(st.integers(0, n))]
    radii = data.draw(st.lists(st.floats(0.0, 5.0), min_size=len(idx), max_size=len(idx)))
    result = radius.merge(_result(correct, dist), [_row(idx, radii, [dist[i] for i in idx])])
    m = result["models"][0]
    placed = m["per_input"]["local_certified_radius"]
    assert len(placed) == n
    for i in range(n):
        assert placed[i] == (radii[idx.index(i)] if i in idx else None)
    c = m["local_certified_radius"]
    bad = [i for i, r in zip(idx, radii) if dist[i] is not None and r > dist[i] * (1 + radius.TOLERANCE)]
    assert c["violating_inputs"] == bad and c["violations"] == len(bad) == c["violations_study"]
    assert c["compared"] == sum(dist[i] is not None for i in idx) == len(idx) - c["unbroken"]
    if c["compared"]:
        r = [x for i, x in zip(idx, radii) if dist[i] is not None]
        assert c["median_radius"] == pytest.approx(float(np.median(r)))


def test_the_step_on_a_linear_model_certifies_below_the_closed_form_distance(monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    g = torch.Generator().manual_seed(0)
    d, C = 12, 4
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, C))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(C, d, generator=g))
        net[1].bias.zero_()
    x = (0.4 + 0.2 * torch.rand(6, d, generator=g)).numpy()
    W = net[1].weight.detach().double().numpy()
    z = x.astype(np.float64) @ W.T  # the float32 weights, in float64
    y = z.argmax(1)
    gap = z[np.arange(6), y][:, None] - z
    wn = np.linalg.norm(W[y][:, None, :] - W[None], axis=2)
    exact = np.min(np.where(wn > 0, gap / np.maximum(wn, 1e-300), np.inf), axis=1)
    assert np.all(exact < 0.35)  # the boundary point lies inside [0, 1]^d, so the box does not matter
    monkeypatch.setattr(radius, "retrain", lambda *a: (net, x, y, (d,)))
    from benchmarks.validation import metrics

    stored = {"per_input": {"correct": [True] * 6, "margin": np.sort(z, 1)[:, -1] - np.sort(z, 1)[:, -2],
                            "first_order": metrics.first_order_distance(net, x).tolist()}}  # fmt: skip
    row = radius.run_model(("m", "breast_cancer", "linear", 0, {}), stored, k=4)
    assert row["reproduced"] and row["indices"] == [0, 1, 2, 3] and row["refused"] is None
    r = np.array(row["radius"])
    assert np.all(r <= exact[:4] * (1 + 1e-6))  # certified: never beyond the true distance
    assert np.all(r >= exact[:4] / 1.05)  # linear: the margin bounds are exact, the bisection ends within 2^(1/32)
    d = np.array(row["attack_distance"])  # the ensemble's verified distances: above the exact one, and close
    assert np.all(d >= exact[:4] * (1 - 1e-5)) and np.all(d <= exact[:4] * 1.01)
    m = {"name": "m", "per_input": {"correct": [True] * 6, "minimal_l2_distance": exact.tolist()}}
    radius.merge({"models": [m]}, [row])
    assert m["local_certified_radius"]["violations"] == 0 == m["local_certified_radius"]["violations_study"]
