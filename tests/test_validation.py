"""The validation study's parts against independent answers, and its pipeline end to end.

- Attacks on a linear classifier, where the minimal ℓ2 distance to the boundary is the closed
  form min_j (z_y − z_j)/‖w_y − w_j‖: no attack reports less (a distance is an upper bound),
  DeepFool + line search (and so the ensemble) comes within 1 %, and with two classes every
  attack does (PGD's bisection within its resolution); a point outside the box or still
  correctly classified is rejected.
- The first-order distance and the per-pair certified radius equal the same closed form there.
- The partial Spearman ρ matches the Gaussian closed form; on clustered data the model-clustered
  bootstrap interval is wider than the i.i.d. one and covers the true ρ far more often.
- Training twice gives identical weights, whatever the caller's thread count.
- MNIST-1D, generated here: the same seed gives the same signals, classes are balanced, and
  simple classifiers learn it far above chance (and more so without the noise and shear).
- The quick study runs, writes its JSON and figure, and obeys what must hold whatever the models.
"""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")


def _linear(seed=0, d=12, C=4):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, C)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(C, d, generator=g, dtype=torch.float64))
        net[1].bias.zero_()
    x = 0.4 + 0.2 * torch.rand(64, d, generator=g, dtype=torch.float64)  # interior: boundary points stay in the box
    with torch.no_grad():
        z = net(x)
    y = z.argmax(1)
    W = net[1].weight.detach()
    gap = z.gather(1, y[:, None]) - z
    wn = (W[y][:, None, :] - W[None]).norm(dim=2)
    exact = torch.where(wn > 0, gap / wn.clamp_min(1e-300), torch.inf).min(dim=1).values
    keep = exact < 0.3  # closest boundary point within 0.3 of x, so inside [0, 1]^d
    return net.float(), x[keep].float(), y[keep], exact[keep].numpy()


def test_attacks_on_a_linear_classifier_match_the_closed_form_distance():
    from benchmarks.validation import attacks

    net, x, y, exact = _linear()
    assert len(exact) >= 10
    for name, attack in attacks.ATTACKS.items():
        adv = attack(net, x, y, 2.0) if name == "pgd_bisection" else attack(net, x, y)
        d, ok = attacks.verified_distance(net, x, y, adv)
        d = d.numpy()
        assert ok.all(), name
        assert np.all(d >= exact * (1 - 1e-4)), name  # never closer than the boundary
    # DeepFool's step aims at the nearest linearised boundary: exact on a linear model. PGD and FMN
    # descend the margin towards the currently top other class, whose boundary need not be nearest.
    dist, rejected = attacks.minimal_distance(net, x, y, 2.0)
    assert sum(rejected.values()) == 0
    assert np.allclose(dist["ensemble"].numpy(), np.min([dist[k].numpy() for k in attacks.ATTACKS], axis=0))
    for k in ("deepfool_line_search", "ensemble"):
        assert np.all(dist[k].numpy() <= exact * 1.01), k


@pytest.mark.parametrize("name", ["pgd_bisection", "fmn", "deepfool_line_search"])
def test_every_attack_finds_the_boundary_of_a_two_class_linear_classifier(name):
    from benchmarks.validation import attacks

    net, x, y, exact = _linear(seed=2, C=2)
    attack = attacks.ATTACKS[name]
    adv = attack(net, x, y, 2.0) if name == "pgd_bisection" else attack(net, x, y)
    d, ok = attacks.verified_distance(net, x, y, adv)
    d = d.numpy()
    assert ok.all() and np.all(d >= exact * (1 - 1e-4))
    assert np.all(d <= exact * 1.01 + 2.0 / 2**attacks.BISECTIONS), np.max(d / exact)


def test_verification_rejects_points_outside_the_box_or_not_misclassified():
    from benchmarks.validation import attacks

    net, x, y, _ = _linear()
    d, ok = attacks.verified_distance(net, x, y, x.clone())  # correctly classified
    assert not ok.any() and np.isinf(d.numpy()).all()
    far = x.clone()
    far[:, 0] = 1.5  # outside [0, 1]
    assert not attacks.verified_distance(net, x, y, far)[1].any()


def test_first_order_distance_and_pair_radius_equal_the_closed_form_on_a_linear_model():
    from benchmarks.validation import metrics

    net, x, _, exact = _linear(seed=1)
    assert np.allclose(metrics.first_order_distance(net, x.numpy()), exact, rtol=1e-5)
    with torch.no_grad():
        z = net.double()(x.double()).numpy()
    assert np.allclose(metrics.pair_radius(z, net[1].weight, 1.0), exact, rtol=1e-5)  # features = x: L_h = 1


def test_partial_spearman_matches_the_gaussian_closed_form():
    from benchmarks.validation import stats

    C = np.array([[1.0, 0.5, 0.6], [0.5, 1.0, 0.4], [0.6, 0.4, 1.0]])
    X = np.random.default_rng(1).multivariate_normal(np.zeros(3), C, size=20000)
    rs = {k: 6 / np.pi * np.arcsin(C[k] / 2) for k in [(0, 1), (0, 2), (1, 2)]}  # Spearman of a Gaussian pair
    want = (rs[0, 1] - rs[0, 2] * rs[1, 2]) / np.sqrt((1 - rs[0, 2] ** 2) * (1 - rs[1, 2] ** 2))
    assert abs(stats.spearman(X[:, 0], X[:, 1], given=X[:, 2]) - want) < 0.02
    assert abs(stats.spearman(X[:, 0], X[:, 1]) - rs[0, 1]) < 0.02


def test_resample_weights_give_the_spearman_rho_of_the_resample_written_out():
    from benchmarks.validation import stats

    rng = np.random.default_rng(0)
    a = np.round(rng.standard_normal(120), 1)  # ties
    b = a + rng.standard_normal(120)
    g = np.repeat(np.arange(6), 20)
    for clustered in (False, True):
        W = stats.weights(g, 8, rng, clustered)
        assert np.all(W.sum(axis=1) == 120) if not clustered else np.all(W.sum(axis=1) % 20 == 0)
        got = stats._weighted_pearson(stats._weighted_ranks(a, W), stats._weighted_ranks(b, W), W)
        for k in range(8):
            idx = np.repeat(np.arange(120), W[k].astype(int))
            assert abs(got[k] - stats.spearman(a[idx], b[idx])) < 1e-12


def test_clustered_interval_is_wider_and_covers_where_the_iid_one_does_not():
    """Random-effects data: a = u_c + e, b = u_c + e', 12 clusters of 40. Pooled, (a, b) is
    Gaussian with correlation ½, so the true Spearman ρ is (6/π) arcsin(¼)."""
    from benchmarks.validation import stats

    true = 6 / np.pi * np.arcsin(0.25)
    cover = {"iid": 0, "clustered": 0}
    seeds = 30
    for s in range(seeds):
        rng = np.random.default_rng(s)
        g = np.repeat(np.arange(12), 40)
        u = rng.standard_normal(12)[g]
        c = stats.correlation(u + rng.standard_normal(g.size), u + rng.standard_normal(g.size), groups=g, boots=200,
                              seed=s)  # fmt: skip
        assert c["clustered"][1] - c["clustered"][0] > c["iid"][1] - c["iid"][0]
        for k in cover:
            cover[k] += c[k][0] <= true <= c[k][1]
    assert cover["clustered"] / seeds >= 0.7 and cover["iid"] / seeds <= 0.7
    assert cover["clustered"] >= cover["iid"] + 5


def test_training_is_deterministic_whatever_the_thread_count():
    from benchmarks.validation import data, train, zoo

    Xtr, ytr, _, _, shape = data.load("digits")
    Xtr, ytr = Xtr[:256], ytr[:256]
    nets = []
    outer = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = zoo.build("mlp", shape, 10, Xtr.mean(0), Xtr.std(0), 16)
        train.train(net, Xtr, ytr, epochs=2, jacobian=0.05, spectral=True)
        assert torch.get_num_threads() == threads  # restored
        nets.append(net)
    torch.set_num_threads(outer)
    a, b = (dict(n.state_dict()) for n in nets)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mnist1d_is_deterministic_balanced_and_learnable():
    from sklearn.neighbors import KNeighborsClassifier

    from benchmarks.validation import data

    X, y = data.mnist1d(samples=2000, seed=3)
    X2, y2 = data.mnist1d(samples=2000, seed=3)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert not np.allclose(X, data.mnist1d(samples=2000, seed=4)[0])
    assert X.shape == (2000, 40) and np.all(np.bincount(y) == 200)
    knn = KNeighborsClassifier(5).fit(X[:1500], y[:1500])
    assert knn.score(X[1500:], y[1500:]) > 0.2  # chance is 0.1; its sd on 500 inputs is ~0.013
    clean = dict(data.MNIST1D, corr_noise=0.0, iid_noise=0.0, shear=0.0)  # only shifts, stretches and padding
    Xc, yc = data.mnist1d(samples=2000, seed=3, p=clean)
    assert KNeighborsClassifier(5).fit(Xc[:1500], yc[:1500]).score(Xc[1500:], yc[1500:]) > knn.score(X[1500:], y[1500:])
    Xtr, ytr, Xte, yte, shape = data.load("mnist1d")
    assert shape == (1, 40) and Xtr.min() >= 0 and Xtr.max() <= 1 and Xte.min() >= 0 and Xte.max() <= 1
    assert len(Xtr) == 4000 and len(Xte) == 1000


def test_quick_study_runs_and_is_consistent(tmp_path):
    pytest.importorskip("art")
    pytest.importorskip("fimaudit_torch")
    from benchmarks.validation import zoo
    from benchmarks.validation.__main__ import QUICK, main

    result = main(["--quick", "--out", str(tmp_path), "--rows", str(tmp_path / "rows.jsonl")])
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["quick"] and [r["name"] for r in saved["models"]] == [f[0] for f in zoo.FAMILY if f[0] in QUICK]
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 3 == len({r["dataset"] for r in saved["models"]})
    ET.parse(tmp_path / "validation.svg")  # well-formed SVG
    for row in result["models"]:
        p = row["per_input"]
        wb = np.array(p["lambda_whitebox"], dtype=float)
        bb = np.array(p["lambda_blackbox"], dtype=float)
        assert np.allclose(bb, wb, rtol=0.05)
        for accs in list(row["robust_accuracy"].values()) + list(row["robust_accuracy_pgd40"].values()):
            vals = [accs[e] for e in sorted(accs, key=float)]
            assert all(a >= b - 1e-12 for a, b in zip(vals, vals[1:])) and vals[0] <= row["clean_accuracy"] + 1e-12
        assert all(v == 0 for v in row["certified_radius_violations"].values())
        assert sum(row["attack_rejected_points"].values()) == 0
        d = np.array([np.inf if v is None else v for v in p["minimal_l2_distance"]])
        for k in ("fmn", "deepfool_line_search", "pgd_bisection"):
            dk = np.array([np.inf if v is None else v for v in p[f"distance_{k}"]])
            assert np.all(d <= dk)
        C = 2 if row["dataset"] == "breast_cancer" else 10
        assert row["bound"]["lipschitz"] is not None or row["arch"] == "attention", row["name"]  # Conv1d/Conv2d: bound
        assert row["cost"]["clever"]["model_calls_per_input"] == (C - 1) * 2 * 10 * 20  # classes × pair × pool
    for table in result["per_input"].values():
        c = table["scores"]["lambda_whitebox"]["censored"]
        assert c["n"] >= 4 and c["iid"][0] <= c["value"] <= c["iid"][1]
    # re-analysis from the saved rows gives the same numbers without rerunning a model
    again = main(["--quick", "--out", str(tmp_path / "again"), "--rows", str(tmp_path / "rows.jsonl")])
    assert json.dumps(again["per_input"]) == json.dumps(result["per_input"])


def test_clever_counts_its_gradient_rows_and_uses_arts_gradients():
    pytest.importorskip("art")
    from art.estimators.classification import PyTorchClassifier

    from benchmarks.validation import metrics

    lin, x, _, _ = _linear(seed=3)
    net = torch.nn.Sequential(lin, torch.nn.Tanh(), torch.nn.Linear(4, 4))
    scores, rows = metrics.clever(net, x[:2].numpy(), (12,), 4, 1.0, nb_batches=5, batch_size=4)
    assert rows == (4 - 1) * 2 * 10 * 4 and np.all(scores > 0)  # target classes × (top, target) × pool of 10·batch
    art = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=(12,), nb_classes=4)
    ours = metrics.art_classifier(net, (12,), 4)
    for label in range(4):
        assert np.allclose(
            ours.class_gradient(x[:5].numpy(), label=label), art.class_gradient(x[:5].numpy(), label=label), atol=1e-6
        )
