"""Branch and bound on unstable ReLUs (fimaudit.bounds.local.branch) against independent answers:
the predicted class of float64 torch at a dense polar grid of every certified disc ∩ box of tiny
two-input ReLU networks (all activation patterns the disc meets), and the radius without branching."""

import copy
import functools

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import fimaudit as fa
from fimaudit.errors import InvalidArgumentError

from .test_bounds_local import export

torch.set_num_threads(1)


@functools.cache
def _net(seed, leaky):
    torch.manual_seed(seed)
    act = nn.LeakyReLU(0.1) if leaky else nn.ReLU()
    net = nn.Sequential(nn.Linear(2, 12), act, nn.Linear(12, 12), copy.deepcopy(act), nn.Linear(12, 3)).eval()
    return net, export(net, (2,))


def _disc(x, r, n_radii, n_angles):
    """A polar grid of the disc of radius r around x (2,), the points in [0, 1]² (x first)."""
    t = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    rad = np.linspace(0, r, n_radii)
    pts = x + (rad[:, None, None] * np.stack([np.cos(t), np.sin(t)], -1)[None]).reshape(-1, 2)
    return pts[np.all((pts >= 0) & (pts <= 1), axis=1)]


def _classes(net, x, r, n_radii=48, n_angles=360):
    """Predicted classes of float64 torch on a polar grid of the disc of radius r around x, in [0, 1]²."""
    with torch.no_grad():
        return copy.deepcopy(net).double()(torch.tensor(_disc(x, r, n_radii, n_angles))).argmax(1).numpy()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 30), xs=st.integers(0, 10_000), leaky=st.booleans(), budget=st.sampled_from([4, 32]))
def test_a_branched_certificate_holds_at_every_point_of_its_disc(seed, xs, leaky, budget):
    net, proto = _net(seed, leaky)
    x = np.random.default_rng(xs).uniform(0.2, 0.8, size=(1, 2))
    r = fa.certified_radius(proto, x, iterations=4, input_domain=(0.0, 1.0), alpha=5, branches=budget)[0]
    with torch.no_grad():
        top = int(net.double()(torch.tensor(x)).argmax())
    assert np.all(_classes(net, x[0], r) == top)


def test_branching_certifies_larger_discs_and_never_a_smaller_one():
    gains = []
    for seed in range(6):
        _, proto = _net(seed, False)
        x = np.random.default_rng(seed).uniform(0.2, 0.8, size=(3, 2))
        kw = dict(iterations=6, input_domain=(0.0, 1.0), alpha=5)
        plain = fa.certified_radius(proto, x, branches=0, **kw)
        split = fa.certified_radius(proto, x, branches=64, **kw)
        assert np.all(split >= plain * (1 - 1e-9))
        gains.append(split / np.maximum(plain, 1e-300))
    assert np.max(gains) > 1.05  # the splits tighten some certificate


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8", 10**7])
def test_a_bad_branch_budget_is_refused(bad):
    _, proto = _net(0, False)
    with pytest.raises(InvalidArgumentError, match="branches"):
        fa.certified_radius(proto, np.full((1, 2), 0.5), branches=bad)


def _subdomain_case(seed, leaky, xs, r):
    """A tiny network's root pass on the disc of radius r around x, its margin rows, and points
    of disc ∩ [0, 1]² with their logits and both hidden pre-activations (float64 torch)."""
    from fimaudit.bounds import memory
    from fimaudit.bounds.local import api, branch

    net, proto = _net(seed, leaky)
    x = np.random.default_rng(xs).uniform(0.2, 0.8, size=(1, 2))
    s = api._Setup(proto, x, None, "categorical", 1.0, (0.0, 1.0), False, memory.DEFAULT_LIMIT, 4096, "l2")
    s.one(0, r, alpha=0)
    pts = _disc(x[0], r, 40, 240)
    n64 = copy.deepcopy(net).double()
    with torch.no_grad():
        h1 = n64[0](torch.tensor(pts))
        h2 = n64[2](n64[1](h1))
        z = n64[4](n64[3](h2)).numpy()
    return s, branch.margin_rows(s.last.point[s.g.output].reshape(-1), (3,)), pts, z, (h1.numpy(), h2.numpy())


def _hidden(p, t, pre):
    """Which torch pre-activation the graph tensor t is (matched at the disc's centre, point 0)."""
    at_x = p.point[t].reshape(-1)
    return next(h for h in pre if h.shape[1] == at_x.size and np.allclose(h[0], at_x, atol=1e-5))


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 30),
    xs=st.integers(0, 10_000),
    leaky=st.booleans(),
    r=st.floats(0.05, 0.5),
    sides=st.lists(st.integers(0, 1), min_size=1, max_size=3),
    alpha=st.sampled_from([0, 6]),
    scramble=st.booleans(),
)
def test_every_subdomain_bound_holds_at_the_points_of_its_subdomain(seed, xs, leaky, r, sides, alpha, scramble):
    """Each split clips one unit's interval and (alpha > 0) optimises its multiplier, starting
    from the slopes its parent ended at (``scramble``: from slopes and multipliers scattered far
    outside their ranges, which the ascent must clip): the margin bounds and intervals of a subdomain pass must hold
    at every grid point of disc ∩ box whose pre-activations have the signs of all its splits."""
    from fimaudit.bounds.local import branch, nested, slopes

    s, rows, pts, z, pre = _subdomain_case(seed, leaky, xs, r)
    p, masks, keep, ended = s.last, {}, np.ones(len(pts), bool), None
    noise = np.random.default_rng(xs)
    root = p
    for side in sides:
        pick = branch._choose(p, rows, np.full(len(rows), -1.0))
        if pick is None:
            break
        t, j = pick
        h = _hidden(p, t, pre)
        keep &= h[:, j] >= 0 if side == 0 else h[:, j] <= 0
        masks = {k: (a.copy(), b.copy()) for k, (a, b) in masks.items()}
        masks.setdefault(t, (np.zeros(p.lo[t].size, bool), np.zeros(p.lo[t].size, bool)))[side][j] = True
        lo, hi = root.lo[s.g.input], root.hi[s.g.input]
        kw = dict(tighten=True, limit=4096, ball=root.ball, alpha=0)
        p = branch.SplitPass(s.net, root.x, lo, hi, nested.intervals(p), masks, s.net.producer[t] + 1, **kw)
        if scramble:  # one ascent step from slopes and multipliers scattered outside their ranges
            values = slopes.optimise(p, s.g.output, rows, 0)[1]
            far = {o: v + noise.normal(0, 5, v.shape) for o, v in values.items()}
            low = slopes.optimise(p, s.g.output, rows, 1, far)[0]
        else:
            low, ended = branch._margins(p, rows, alpha, ended)
        inside = z[keep] @ rows.T
        if len(inside):
            assert np.all(low <= inside.min(0) + 1e-7), (low, inside.min(0))
            for u in {k for k in masks}:
                hu = _hidden(p, u, pre)[keep]
                assert np.all(p.lo[u].reshape(-1) <= hu.min(0) + 1e-7)
                assert np.all(p.hi[u].reshape(-1) >= hu.max(0) - 1e-7)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 30), xs=st.integers(0, 10_000), budget=st.integers(1, 12))
def test_no_ball_is_given_more_subdomain_passes_than_its_budget(seed, xs, budget):
    from fimaudit.bounds.local import branch

    counts, passes = [], [0]

    class Counted(branch.SplitPass):
        def __init__(self, *a, **kw):
            passes[0] += 1
            super().__init__(*a, **kw)

    def certify(*a):
        passes[0] = 0
        out = real(*a)
        counts.append(passes[0])
        return out

    _, proto = _net(seed, False)
    x = np.random.default_rng(xs).uniform(0.2, 0.8, size=(1, 2))
    real = branch.certify
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(branch, "SplitPass", Counted)
        mp.setattr(branch, "certify", certify)
        fa.certified_radius(proto, x, iterations=4, input_domain=(0.0, 1.0), alpha=0, branches=budget)
    assume(counts)  # some ball was refused and branched on (too few such cases: Unsatisfiable)
    assert max(counts) <= budget
