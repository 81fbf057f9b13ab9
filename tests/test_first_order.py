"""The first-order distance d₁ = min_j (z_y − z_j)/‖∇(z_y − z_j)‖ against independent answers:
explicit projections onto a linear model's boundaries, float64 Jacobians (hand-written and
torch autograd), a saturated softmax, and black-box finite differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.audit.report import render
from fimaudit.testing import LinearModel, MLPModel
from fimaudit.testing import strategies as fst
from tests.browser import CHROMIUM, headless


def reference(J, z, likelihood="categorical"):
    """d₁ and the set of minimizing classes from a float64 Jacobian (n, C, d), class by class."""
    dist, classes = [], []
    for Ji, zi in zip(np.asarray(J, np.float64), np.asarray(z, np.float64)):
        if likelihood == "categorical":
            y = int(np.argmax(zi))
            cand = {j: (zi[y] - zi[j]) / np.linalg.norm(Ji[y] - Ji[j]) for j in range(len(zi)) if j != y}
        else:
            cand = {c: abs(zi[c]) / np.linalg.norm(Ji[c]) for c in range(len(zi))}
        best = min(cand.values())
        dist.append(best)
        classes.append({j for j, v in cand.items() if v <= best * (1 + 1e-9)})
    return np.array(dist), classes


def projection_distance(W, b, x):
    """For z = W x + b: the explicit projection of x onto each pairwise boundary z_y = z_j, and
    the smallest ‖x − x'‖ over j — the exact ℓ2 distance to the nearest pairwise boundary."""
    out, cls = [], []
    for xi in x:
        z = W @ xi + b
        y = int(np.argmax(z))
        best = (np.inf, -1)
        for j in range(len(z)):
            if j == y:
                continue
            a, c = W[y] - W[j], b[y] - b[j]
            xp = xi - (a @ xi + c) / (a @ a) * a  # the foot of the perpendicular on aᵀx + c = 0
            zp = W @ xp + b
            assert abs(zp[y] - zp[j]) <= 1e-9 * (1 + np.abs(zp).max())  # it lies on the boundary
            best = min(best, (float(np.linalg.norm(xi - xp)), j))
        out.append(best[0])
        cls.append(best[1])
    return np.array(out), np.array(cls)


@settings(max_examples=40, deadline=None)
@given(fst.linear_models(likelihood="categorical"), st.data())
def test_linear_softmax_is_the_exact_distance_to_the_nearest_boundary(m, data):
    x = data.draw(fst.inputs(m))
    r = fa.fisher_norm(m, x, method="exact")
    dist, cls = projection_distance(m.W, m.b, x.reshape(len(x), -1))
    assert np.allclose(r.first_order_distance, dist, rtol=1e-9, atol=1e-12)
    z = m.forward(x)
    _, sets = reference(np.broadcast_to(m.W, (len(x), *m.W.shape)), z)
    assert all(int(c) in s for c, s in zip(r.first_order_class, sets))
    assert np.all(r.first_order_class != np.argmax(z, axis=1))


@settings(max_examples=30, deadline=None)
@given(fst.linear_models(likelihood="bernoulli"), st.data())
def test_bernoulli_linear_is_the_distance_to_the_nearest_label_flip(m, data):
    x = data.draw(fst.inputs(m)).reshape(-1, m.W.shape[1])
    r = fa.fisher_norm(m, x, method="exact")
    z = m.forward(x)
    planes = np.abs(z) / np.linalg.norm(m.W, axis=1)[None, :]  # distance to each hyperplane z_c = 0
    assert np.allclose(r.first_order_distance, planes.min(axis=1), rtol=1e-9, atol=1e-12)
    picked = planes[np.arange(len(x)), r.first_order_class]
    assert np.allclose(picked, planes.min(axis=1), rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(fst.mlp_models(likelihood="categorical"), st.data())
def test_mlp_matches_the_hand_written_jacobian(m, data):
    x = data.draw(fst.inputs(m))
    r = fa.fisher_norm(m, x, method="exact")
    dist, sets = reference(fa.testing.jacobian(m, x), m.forward(x))
    assert np.allclose(r.first_order_distance, dist, rtol=1e-9)
    assert all(int(c) in s for c, s in zip(r.first_order_class, sets))


def test_torch_autograd_reference_float64_and_float32():
    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    from fimaudit_torch.testing import small_cnn

    torch.manual_seed(3)
    net = small_cnn().double().eval()
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    J = torch.stack(
        [torch.autograd.functional.jacobian(lambda a: net(a[None])[0], x[i]).reshape(10, -1) for i in range(4)]
    )
    with torch.no_grad():
        z = net(x)
    dist, sets = reference(J.numpy(), z.numpy())
    r = fa.fisher_norm(net, x, method="exact")
    assert isinstance(r.first_order_distance, torch.Tensor) and r.first_order_distance.dtype == torch.float64
    assert np.allclose(r.first_order_distance.numpy(), dist, rtol=1e-10)
    assert all(int(c) in s for c, s in zip(r.first_order_class, sets))
    r32 = fa.fisher_norm(net.float(), x.float(), method="exact")
    assert r32.first_order_distance.dtype == torch.float32
    assert np.allclose(r32.first_order_distance.numpy(), dist, rtol=1e-4)


@pytest.mark.parametrize("gap", [np.log(1e12), 40.0])
def test_saturated_softmax_keeps_the_distance(gap):
    """p_y = 1 − 1e-12 (and e^-40): R J scales the runner-up rows by √p_j ≈ 1e-6, yet the
    differences of J's rows are taken directly, so d₁ = gap / ‖w_y − w_j‖ to machine precision."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 7))
    x = rng.standard_normal((3, 7))
    z = x @ W.T
    b = -z[0]  # all logits 0 at x[0] …
    b[2] += gap  # … except class 2, saturated
    m = LinearModel(W, b)
    zz = m.forward(x[:1])
    p = np.exp(zz - zz.max()) / np.exp(zz - zz.max()).sum()
    assert p[0, 2] > 1 - 1e-11
    r = fa.fisher_norm(m, x[:1], method="exact")
    expected = min(gap / np.linalg.norm(W[2] - W[j]) for j in range(5) if j != 2)
    assert r.first_order_distance[0] == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(r.value[0]) and r.value[0] >= 0


def test_served_as_probabilities_reads_log_p():
    """log p_y − log p_j = z_y − z_j: the probability model gives the logits' distance."""
    rng = np.random.default_rng(1)
    W, b = rng.standard_normal((4, 6)), rng.standard_normal(4)
    x = rng.standard_normal((5, 6))
    a = fa.fisher_norm(LinearModel(W, b), x, method="exact")
    sm = lambda v: np.exp(v - v.max(axis=1, keepdims=True)) / np.exp(v - v.max(axis=1, keepdims=True)).sum(1)[:, None]  # noqa: E731
    bb = fa.wrap(lambda v: sm(v @ W.T + b), input_shape=(6,), output="probs")
    r = fa.fisher_norm(bb, x, method="exact")
    assert np.allclose(r.first_order_distance, a.first_order_distance, rtol=1e-5)
    assert np.array_equal(r.first_order_class, a.first_order_class)


def test_white_box_and_black_box_exact_agree_within_finite_difference_error():
    m = MLPModel.random([8, 12, 6], seed=2, scale=1.5)
    x = np.random.default_rng(2).standard_normal((6, 8))
    wb = fa.fisher_norm(m, x, method="exact")
    bb = fa.fisher_norm(fa.wrap(m.forward, input_shape=(8,), output="logits"), x, method="exact")
    assert np.allclose(bb.first_order_distance, wb.first_order_distance, rtol=1e-5)
    assert np.array_equal(bb.first_order_class, wb.first_order_class)


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli"])
def test_chunked_gram_gives_the_same_distances(likelihood):
    """W too large for memory_limit: J Jᵀ chunk by chunk, the anchor row first."""
    m = MLPModel.random([9, 10, 7], seed=5, scale=2.0, likelihood=likelihood)
    x = np.random.default_rng(5).standard_normal((4, 9))
    held = fa.fisher_norm(m, x, method="exact")
    tight = fa.fisher_norm(m, x, method="exact", memory_limit=2 * 4 * 9 * 16)  # two rows of J (and of W) at a time
    assert np.all(tight.queries == 1 + 2 * 7)  # the chunked path: C vjps + C jvps
    assert np.allclose(tight.first_order_distance, held.first_order_distance, rtol=1e-12)
    assert np.array_equal(tight.first_order_class, held.first_order_class)
    assert np.allclose(tight.value, held.value, rtol=1e-10)
    just = fa.fisher_norm(m, x, method="exact", memory_limit=4 * 7 * 9 * 16, return_direction=True)  # J and W held,
    assert np.all(just.queries == 1 + 7)  # formed from J a block of columns at a time
    assert np.allclose(just.value, held.value, rtol=1e-12) and np.array_equal(
        just.first_order_class, held.first_order_class
    )
    ref = fa.fisher_norm(m, x, method="exact", return_direction=True)
    assert np.allclose(np.abs(np.sum(just.direction * ref.direction, axis=1)), 1.0)


def test_zero_gradient_is_inf_never_nan():
    W = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])  # classes 0 and 1 move together
    r = fa.fisher_norm(LinearModel(W, np.array([1.0, 0.0, 0.0])), np.array([[0.0, 0.0]]), method="exact")
    assert r.first_order_distance[0] == pytest.approx(1.0 / np.linalg.norm(W[0] - W[2]))
    flat = fa.fisher_norm(LinearModel(np.zeros((3, 2)), np.array([2.0, 1.0, 0.0])), np.zeros((2, 2)), method="exact")
    assert np.all(np.isposinf(flat.first_order_distance))
    assert flat.first_order_class.tolist() == [1, 1]  # every pair +inf: the runner-up class


def test_gaussian_and_iterative_methods_have_none():
    m = MLPModel.random([5, 6, 3], seed=1)
    x = np.random.default_rng(1).standard_normal((2, 5))
    g = fa.fisher_norm(MLPModel(m.weights, m.biases, likelihood="gaussian"), x, method="exact")
    assert g.first_order_distance is None and g.first_order_class is None
    lz = fa.fisher_norm(m, x, method="lanczos")
    assert lz.first_order_distance is None and lz.first_order_class is None
    s = fa.fisher_spectrum(m, x, k=2, method="exact")
    assert np.allclose(s.first_order_distance, fa.fisher_norm(m, x, method="exact").first_order_distance)


# ---------------------------------------------------------------- per-pair certified radius


def _torch_net(kind, seed, width):
    import torch
    from fimaudit_torch.testing import Standardize

    torch.manual_seed(seed)
    nn = torch.nn
    if kind == "mlp":
        layers = [nn.Flatten(), nn.Linear(12, width), nn.ReLU(), nn.Linear(width, width), nn.Tanh()]
        shape = (12,)
    elif kind == "cnn":
        layers = [
            nn.Conv2d(1, 3, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(27, width),
            nn.ReLU(),
        ]
        shape = (1, 6, 6)
    else:  # standardised linear: the scale folds into the only (last) layer
        layers = [Standardize(torch.rand(12) * 0.5, torch.rand(12) * 1.9 + 0.1), nn.Linear(12, 5)]
        return nn.Sequential(*layers).eval(), (12,)
    return nn.Sequential(*layers, nn.Linear(width, 5)).eval(), shape


def _attack(net, x, r, steps=40):
    """Projected gradient ascent on max_j z_j − z_y inside the ℓ2 ball of radius r around each x."""
    import torch

    y = net(x).argmax(1)
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        z = net(x + delta)
        top = z.gather(1, y[:, None])[:, 0]
        other = z.masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(), -torch.inf).max(1).values
        (g,) = torch.autograd.grad((other - top).sum(), delta)
        with torch.no_grad():
            flat = g.flatten(1)
            step = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-300)
            d = delta.flatten(1) + 0.25 * r[:, None] * step
            d = d * torch.clamp(r[:, None] / d.norm(dim=1, keepdim=True).clamp_min(1e-300), max=1.0)
            delta.copy_(d.view_as(x))
    with torch.no_grad():
        return net(x + delta).argmax(1) == y


@settings(max_examples=4, deadline=None)
@given(st.sampled_from(["mlp", "cnn"]), st.integers(0, 10_000), st.sampled_from([8, 16]))
def test_per_pair_radius_is_sound_and_never_below_the_margin_radius(kind, seed, width):
    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    net, shape = _torch_net(kind, seed, width)
    b = fa.lipschitz_bound(fa.wrap(net, input_shape=shape))
    assert b.head is not None and b.penultimate is not None
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, *shape, generator=g, dtype=torch.float64)
    net64 = net.double()
    with torch.no_grad():
        z = net64(x).numpy()
    top2 = np.sort(z, axis=1)
    old = (top2[:, -1] - top2[:, -2]) / (np.sqrt(2.0) * b.lipschitz)
    r = b.certified_radius(z)
    assert np.all(r >= old * (1 - 1e-12))
    assert np.any(r > old * (1 + 1e-3))  # the pairwise weights are tighter than √2 ‖W‖₂ somewhere
    rt = torch.from_numpy(r * 0.999)
    assert _attack(net64, x, rt).all()  # no perturbation found inside the radius changes the class
    with torch.no_grad():
        for i in range(len(x)):
            d = torch.randn(128, *shape, generator=g, dtype=torch.float64)
            d = d / d.flatten(1).norm(dim=1).view(-1, *[1] * len(shape)) * rt[i]
            assert (net64(x[i] + d).argmax(1) == int(z[i].argmax())).all()


def test_per_pair_radius_of_a_linear_model_is_the_exact_distance():
    """One (standardised) linear layer: L_pen = 1 and the radius is the distance to the nearest
    pairwise boundary — the first-order distance, which is exact there too — and just past it
    the class changes."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    net, shape = _torch_net("linear", 3, None)
    b = fa.lipschitz_bound(fa.wrap(net, input_shape=shape))
    assert b.penultimate == pytest.approx(1.0)
    x = torch.randn(8, 12, dtype=torch.float64)
    net64 = net.double()
    with torch.no_grad():
        z = net64(x)
    r = b.certified_radius(z.numpy())
    d1 = fa.fisher_norm(net64, x, method="exact")
    assert np.allclose(r, d1.first_order_distance.numpy(), rtol=1e-5)  # float32 graph weights vs float64
    x.requires_grad_(True)
    for i in range(8):  # step to the nearest boundary along its normal, 0.1% past it: the class changes
        y, j = int(z[i].argmax()), int(d1.first_order_class[i])
        (gd,) = torch.autograd.grad(net64(x[i : i + 1])[0, j] - net64(x[i : i + 1])[0, y], x)
        with torch.no_grad():
            step = gd[i] / gd[i].norm() * float(r[i]) * 1.001
            assert int(net64((x[i] + step)[None]).argmax()) != y


def test_a_graph_without_a_linear_last_layer_keeps_the_margin_radius():
    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh()).eval()
    b = fa.lipschitz_bound(fa.wrap(net, input_shape=(6,)))
    assert b.head is None
    z = np.random.default_rng(0).standard_normal((5, 4))
    top2 = np.sort(z, axis=1)
    assert np.allclose(b.certified_radius(z), (top2[:, -1] - top2[:, -2]) / (np.sqrt(2.0) * b.lipschitz))


# ---------------------------------------------------------------- audits: rows, summary, files, report, CLI


def _report_table(html_text):
    """The inputs table of report.html as dicts keyed by its header (the test's own parser)."""
    from html.parser import HTMLParser

    class Table(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.rows, self.cell, self.inside = [], None, False

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.inside = dict(attrs).get("class") == "inputs"
            elif self.inside and tag == "tr":
                self.rows.append([])
            elif self.inside and tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append("".join(self.cell).strip())
                self.cell = None
            elif tag == "table":
                self.inside = False

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    t = Table()
    t.feed(html_text)
    head, *body = t.rows
    return head, [dict(zip(head, r)) for r in body]


def test_audit_rows_summary_json_csv_and_report_carry_the_first_order_distance(tmp_path):
    import csv
    import json

    m = MLPModel.random([6, 8, 4], seed=7, scale=2.0)
    X = np.random.default_rng(7).standard_normal((12, 6))
    a = fa.audit(m, X, progress=False, method="exact", batch_size=5)
    ref = fa.fisher_norm(m, X, method="exact")
    got = np.array([r["first_order_distance"] for r in a.rows])
    assert np.allclose(got, ref.first_order_distance, rtol=1e-12)
    assert [r["first_order_class"] for r in a.rows] == ref.first_order_class.tolist()
    assert a.summary["first_order_distance_median"] == pytest.approx(float(np.median(ref.first_order_distance)))
    a.save(tmp_path / "out")
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["first_order_distance"] for r in data["rows"]] == got.tolist()
    assert (
        fa.Audit.load(tmp_path / "out").summary["first_order_distance_median"]
        == a.summary["first_order_distance_median"]
    )
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        assert np.allclose([float(r["first_order_distance"]) for r in csv.DictReader(f)], got, rtol=1e-12)
    page = (tmp_path / "out" / "report.html").read_text()
    head, rows = _report_table(page)
    assert head.index("d₁") == head.index("[lower, upper]") + 1  # next to λ_max and its bracket
    by_index = {r["index"]: r for r in a.rows}
    for r in rows:
        assert float(r["d₁"]) == pytest.approx(by_index[int(r["index"])]["first_order_distance"], rel=1e-3)
        assert int(r["d₁ class"]) == by_index[int(r["index"])]["first_order_class"]
    assert "not a certificate" in page and "proven lower bound" in page and "sensitivity" in page


def test_audit_without_an_exact_method_or_with_a_gaussian_model_has_no_first_order_column():
    m = MLPModel.random([6, 8, 4], seed=7)
    X = np.random.default_rng(7).standard_normal((4, 6))
    for a in (
        fa.audit(m, X, progress=False, method="lanczos"),
        fa.audit(MLPModel(m.weights, m.biases, likelihood="gaussian"), X, progress=False),
    ):
        assert all(r["first_order_distance"] is None and r["first_order_class"] is None for r in a.rows)
        assert "first_order_distance_median" not in a.summary
        head, _ = _report_table(render(a))
        assert "d₁" not in head


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_report_in_a_browser_shows_the_first_order_column(tmp_path):
    m = MLPModel.random([6, 8, 4], seed=8)
    a = fa.audit(m, np.random.default_rng(8).standard_normal((6, 6)), progress=False, method="exact")
    proc = headless(tmp_path, a.save(tmp_path / "out"), "--dump-dom")
    head, rows = _report_table(proc.stdout)
    assert len(rows) == 6, proc.stderr[-2000:]
    want = sorted(r["first_order_distance"] for r in a.rows)
    assert sorted(float(r["d₁"]) for r in rows) == pytest.approx(want, rel=1e-3)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_degenerate_gradients_give_inf_never_nan(data):
    """Rows of W drawn from a pool with repeats and a zero row: pairs whose rows coincide never
    reach their boundary (+inf); the result is never NaN and matches the pairwise closed form."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    C, d = data.draw(st.integers(2, 6)), data.draw(st.integers(1, 5))
    pool = np.vstack([np.zeros(d), rng.standard_normal((2, d))])
    W = pool[data.draw(st.lists(st.integers(0, 2), min_size=C, max_size=C))]
    b = rng.standard_normal(C)
    x = rng.standard_normal((3, d))
    r = fa.fisher_norm(LinearModel(W, b), x, method="exact")
    assert not np.any(np.isnan(r.first_order_distance))
    z = x @ W.T + b
    for i in range(3):
        y = int(np.argmax(z[i]))
        pairs = [
            (z[i, y] - z[i, j]) / np.linalg.norm(W[y] - W[j]) if np.any(W[y] != W[j]) else np.inf
            for j in range(C)
            if j != y
        ]
        assert r.first_order_distance[i] == pytest.approx(min(pairs), rel=1e-9)
        assert r.first_order_class[i] != y


def test_batches_that_auto_sends_to_lanczos_get_nan_and_class_minus_one():
    """auto decides per batch: a batch whose W does not fit goes to Lanczos under this budget, the
    last, smaller one fits and is exact; the joined result marks the Lanczos rows."""
    m = MLPModel.random([5, 6, 4], seed=9)
    x = np.random.default_rng(9).standard_normal((5, 5))
    with pytest.warns(fa.errors.NotConvergedWarning):  # the budget stops Lanczos early: flagged, kept
        r = fa.fisher_norm(m, x, batch_size=4, budget=6, memory_limit=1 * 4 * 5 * 16, on_nonconvergence="flag")
    assert r.method == "exact+lanczos"
    d = np.asarray(r.first_order_distance)
    assert np.all(np.isnan(d[:4])) and r.first_order_class[:4].tolist() == [-1] * 4
    assert d[4] == pytest.approx(float(fa.fisher_norm(m, x[4:], method="exact").first_order_distance[0]))
    assert r.steps[4] == -1 and np.all(r.steps[:4] > 0)  # and the exact row has no Lanczos steps
