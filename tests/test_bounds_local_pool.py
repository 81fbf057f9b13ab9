"""Local bounds through max pools and the spectral-norm bound over the Jacobian's zonotope:
exhaustive enumeration of the linear regions of tiny ReLU/max-pool networks, vertex
enumeration of small matrix zonotopes, closed forms, and the candidate cells of a window
against sampled points."""

import copy
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import linprog
from torch import nn

import fimaudit as fa
from fimaudit.bounds.local import grid, zonotope

from .test_bounds_local import export, sampled_max

torch.set_num_threads(1)

# --- the zonotope norm bound against vertex enumeration


def _zonotope(draw_seed, rows, n, k, rank_one, radius):
    rng = np.random.default_rng(draw_seed)
    M0 = rng.normal(size=(rows, n))
    if rank_one:
        Mk = np.einsum("kr,kn->krn", rng.normal(size=(k, rows)), rng.normal(size=(k, n)))
    else:
        Mk = rng.normal(size=(k, rows, n))
    Mk *= rng.uniform(0.05, 1.5, size=(k, 1, 1))
    R = radius * rng.random((rows, n))
    return M0, R, Mk


def _vertices(M0, R, Mk, seed):
    """Matrices of the set at every ε vertex, each with E = ±R at the signs of its top
    singular pair (the worst E for that direction) and at a few random sign patterns."""
    rng = np.random.default_rng(seed)
    for eps in itertools.product([-1.0, 1.0], repeat=Mk.shape[0]):
        J = M0 + np.tensordot(np.array(eps), Mk, 1) if Mk.shape[0] else M0.copy()
        U, _, Vt = np.linalg.svd(J)
        yield J + R * np.sign(np.outer(U[:, 0], Vt[0]))
        for _ in range(2):
            yield J + R * rng.choice([-1.0, 1.0], size=R.shape)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 4),
    n=st.integers(1, 7),
    k=st.integers(0, 6),
    rank_one=st.booleans(),
    radius=st.sampled_from([0.0, 0.01, 0.3]),
)
def test_the_zonotope_bound_is_above_every_vertex(seed, rows, n, k, rank_one, radius):
    M0, R, Mk = _zonotope(seed, rows, n, k, rank_one, radius)
    bound, per_row = zonotope.norm_bound(M0, R, Mk), zonotope.row_bounds(M0, R, Mk)
    worst, worst_rows = 0.0, np.zeros(rows)
    for J in _vertices(M0, R, Mk, seed):
        worst = max(worst, np.linalg.norm(J, 2))
        worst_rows = np.maximum(worst_rows, np.linalg.norm(J, axis=1))
    assert bound >= worst * (1 - 1e-12), (bound, worst)
    assert np.all(per_row >= worst_rows * (1 - 1e-12))
    # never worse than the triangle inequality over the generators' factors
    if rank_one and radius == 0.0:
        C, W, _ = zonotope.factors(Mk, R)
        tri = np.linalg.norm(M0, 2) + (np.linalg.norm(C, 2) * np.linalg.norm(W, 2) if k else 0.0)
        assert bound <= tri * (1 + 1e-9)


def test_the_zonotope_bound_is_exact_on_parallel_rows_of_disjoint_columns():
    # J = [α u, ε β u, 0...]: every vertex has norm √(α² + β²), which the bound reaches
    rng = np.random.default_rng(0)
    u = rng.normal(size=4)
    u /= np.linalg.norm(u)
    M0, M1 = np.zeros((4, 6)), np.zeros((1, 4, 6))
    M0[:, 0], M1[0, :, 3] = 2.0 * u, 0.5 * u
    b = zonotope.norm_bound(M0, np.zeros((4, 6)), M1)
    assert b == pytest.approx(np.hypot(2.0, 0.5), rel=1e-6)
    # one rank-one generator alone: its spectral norm
    M1 = np.outer(rng.normal(size=4), rng.normal(size=6))[None]
    assert zonotope.norm_bound(np.zeros((4, 6)), np.zeros((4, 6)), M1) == pytest.approx(
        np.linalg.norm(M1[0], 2), rel=1e-9
    )


def test_the_zonotope_bound_beats_the_interval_hull_on_cancelling_generators():
    # many generators on the same columns with alternating signs: the hull adds |M_k|
    rng = np.random.default_rng(1)
    c, w = rng.normal(size=(30, 5)), rng.normal(size=(30, 40)) / 30
    Mk = np.einsum("kr,kn->krn", c, w)
    M0, R = rng.normal(size=(5, 40)), np.zeros((5, 40))
    hull = np.linalg.norm(M0, 2) + np.linalg.norm(np.abs(Mk).sum(0), 2)
    assert zonotope.norm_bound(M0, R, Mk) < hull


# --- candidate cells of a max-pool window


@settings(max_examples=60, deadline=None)
@given(
    ends=hnp.arrays(np.int64, (2, 1, 2, 4, 4), elements=st.integers(-2, 2)),
    kernel=st.sampled_from([(2, 2), (3, 3), (2, 3)]),
    stride=st.integers(1, 2),
    seed=st.integers(0, 1000),
)
def test_dropped_cells_never_hold_the_window_maximum_alone(ends, kernel, stride, seed):
    lo, hi = np.minimum(*ends).astype(float), np.maximum(*ends).astype(float)  # integers: many ties
    out_hw = ((4 - kernel[0]) // stride + 1, (4 - kernel[1]) // stride + 1)
    geo = (list(kernel), [stride, stride], [1, 1], [0, 0, 0, 0])
    masks, count = grid.max_candidates(lo, hi, geo, out_hw)
    assert np.all(count >= 1)
    rng = np.random.default_rng(seed)
    for _ in range(40):  # points of the box, often at the ends (where ties are)
        pick = rng.integers(0, 3, size=lo.shape)
        v = np.where(pick == 0, lo, np.where(pick == 1, hi, lo + rng.random(lo.shape) * (hi - lo)))
        vp = grid.pad(v, geo, -np.inf)
        cells = np.stack([vp[sl] for _, _, sl in grid._slices(geo, out_hw)])
        kept = np.where(np.stack(masks), cells, -np.inf).max(0)
        assert np.array_equal(kept, cells.max(0))


# --- exhaustive enumeration of the linear regions of tiny ReLU + max-pool networks


def tiny_pool_net(seed, channels, stride):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, channels, 2),
        nn.ReLU(),
        nn.MaxPool2d(2, stride=stride),
        nn.Flatten(),
        nn.Linear(channels * (2 if stride == 1 else 4), 3),
    ).eval()


def _dense(net, shape):
    """(W1, b1, windows, W2): pre-activations W1 x + b1, the pool windows as lists of unit
    indices (one per pooled output, in the Linear's order), the last layer's weight."""
    conv, pool, lin = net[0].double(), net[2], net[4].double()
    d = int(np.prod(shape))
    with torch.no_grad():
        b1 = conv(torch.zeros(1, *shape, dtype=torch.float64)).reshape(-1).numpy()
        W1 = (conv(torch.eye(d, dtype=torch.float64).reshape(d, *shape)).reshape(d, -1).numpy() - b1).T
        grid_shape = conv(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:]
    idx = np.arange(int(np.prod(grid_shape))).reshape(grid_shape)
    k, s = pool.kernel_size, pool.stride
    windows = []
    for c in range(grid_shape[0]):
        for i in range(0, grid_shape[1] - k + 1, s):
            for j in range(0, grid_shape[2] - k + 1, s):
                windows.append(idx[c, i : i + k, j : j + k].reshape(-1).tolist())
    return W1, b1, windows, lin.weight.detach().numpy()


def _candidates(h, spread, windows):
    """Per window the cells that can hold its maximum somewhere in the box (exact ranges)."""
    lo, hi = np.maximum(h - spread, 0.0), np.maximum(h + spread, 0.0)
    return [[c for c, a in enumerate(w) if hi[a] >= max(lo[o] for o in w)] for w in windows]


def pool_regions_max(net, shape, x, rho):
    """max ‖J‖₂ over the (ReLU signs, window argmax) patterns whose region meets the box's
    interior: per pattern an LP maximising the slack t of its constraints in the box (two
    cells both off tie at 0 and need no order)."""
    W1, b1, windows, W2 = _dense(net, shape)
    h, spread = W1 @ x + b1, np.abs(W1).sum(1) * rho  # exact pre-activation ranges on the box
    free = [i for i in range(len(h)) if h[i] - spread[i] < 0 < h[i] + spread[i]]
    cands = _candidates(h, spread, windows)
    best = 0.0
    for signs in itertools.product([0, 1], repeat=len(free)):
        s = (h > 0).astype(float)
        s[free] = signs
        for choice in itertools.product(*cands):
            rows = [(-(2 * s[i] - 1) * W1[i], (2 * s[i] - 1) * b1[i]) for i in range(len(h))]  # sign · pre ≥ t
            for w, c in zip(windows, choice):
                a = w[c]
                for o in w:
                    if o != a and (s[a] or s[o]):  # v_a − v_o ≥ t with v = s · pre
                        rows.append((-(s[a] * W1[a] - s[o] * W1[o]), s[a] * b1[a] - s[o] * b1[o]))
            A = np.array([np.append(r, 1.0) for r, _ in rows])
            res = linprog(
                np.append(np.zeros(len(x)), -1.0),
                A_ub=A,
                b_ub=np.array([c for _, c in rows]),
                bounds=[(xi - rho, xi + rho) for xi in x] + [(None, 1.0)],
            )
            if res.status == 0 and -res.fun > 1e-9:
                P = np.zeros((len(windows), len(h)))
                P[np.arange(len(windows)), [w[c] for w, c in zip(windows, choice)]] = 1.0
                best = max(best, np.linalg.norm(W2 @ P @ (s[:, None] * W1), 2))
    return best


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), channels=st.integers(1, 2), stride=st.integers(1, 2), log_rho=st.floats(-3, -0.5))
def test_enumerated_pool_regions_never_exceed_the_bound(seed, channels, stride, log_rho):
    shape = (1, 3, 4) if stride == 1 else (1, 5, 5)
    net = tiny_pool_net(seed, channels, stride)
    proto = export(net, shape)
    x = np.random.default_rng(seed).normal(size=(1, *shape))
    W1, b1, windows, _ = _dense(net, shape)
    rho = 10.0**log_rho
    while True:  # a box small enough to enumerate
        h, spread = W1 @ x.reshape(-1) + b1, np.abs(W1).sum(1) * rho
        patterns = 2 ** int(np.sum(np.abs(h) < spread)) * np.prod([len(c) for c in _candidates(h, spread, windows)])
        if patterns <= 512:
            break
        rho /= 2
    b = fa.local_bound(proto, x, rho, global_cap=False)
    exact = pool_regions_max(net, shape, x.reshape(-1), rho)
    assert b.lipschitz[0] >= exact * (1 - 1e-6), (b.lipschitz, exact)  # 1e-6: float32 weights in the graph
    assert b.lipschitz[0] >= sampled_max(net, torch.tensor(x[0]), rho, n=20, steps=0) * (1 - 1e-6)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every logit on the box lies in the bounds
        pts = torch.tensor(x) + rho * (2 * torch.rand(64, *shape, generator=g, dtype=torch.float64) - 1)
        z = copy.deepcopy(net).double()(pts).numpy()
    assert np.all(z >= b.logits_lower - 1e-6) and np.all(z <= b.logits_upper + 1e-6)


def test_a_window_of_relu_zeros_and_one_unstable_cell_is_that_cell():
    # three cells off on the whole box (0) and one that may turn on ([0, 0.15]): the window is
    # that cell's value; CROWN must select it, not a zero, or the logit bounds miss the points
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1, 2)).eval()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(0.0)
    x = np.array([[[[-1.0, -1.0], [-1.0, 0.05]]]])  # the live cell last: the largest lower end is a zero
    lo, hi = np.maximum(x - 0.1, 0), np.maximum(x + 0.1, 0)
    geo = ([2, 2], [2, 2], [1, 1], [0, 0, 0, 0])
    masks, count = grid.max_candidates(lo, hi, geo, (1, 1))
    assert count.item() == 1 and masks[3].item()
    b = fa.local_bound(export(net, (1, 2, 2)), x, 0.1, global_cap=False)
    w = net[4].weight.detach().double().numpy()
    assert b.lipschitz[0] >= np.linalg.norm(w, 2) * (1 - 1e-6)  # J = w e_0ᵀ where the cell is on
    with torch.no_grad():
        pts = torch.tensor(x) + 0.1 * (2 * torch.rand(200, 1, 2, 2, dtype=torch.float64) - 1)
        z = copy.deepcopy(net).double()(pts).numpy()
    assert np.all(z >= b.logits_lower - 1e-6) and np.all(z <= b.logits_upper + 1e-6)
