"""The sequential sketch on CNNs at d = 3,072 and 12,288, simulated exactly from a dense Jacobian.

For a model's Fisher factor A = U Σ Vᵀ at x (C × d, rows √p_c ∇ log p_c from float64 autodiff,
AᵀA = F), the sketch of k orthonormal probes drawn without replacement is S_k = A Q_kᵀ =
U Σ (Q_k V)ᵀ. The rows of a Haar d × d orthogonal matrix, in the order drawn, make Q V a Haar
d × C frame (rotation invariance), so S_k = U Σ O[:k]ᵀ with O the Q factor of a d × C Gaussian:
this is the law of the sketch a black box gives with exact products, at O(d C²) cost per run
instead of the O(d k²) of orthogonalising k probes in R^d. The library's own loop
(:func:`fimaudit.blackbox.sequential.sequential_norm`: its looks, error spending, stopping
rule, interval and point value) runs on these sketches; only its probe drawing is replaced.
Finite-difference error is left out (it widens both ends by the same amount in a real run).

The oracle sees the same probe sequence and stops at the first k where the true relative
error of the scaled sketch's top eigenvalue, (d/k) λ_max(S_k S_kᵀ), is ≤ tol. Calls are
counted as a black box pays them: the finite-difference set-up plus 2 per probe.
"""

import types
import warnings

import numpy as np

from fimaudit._array import namespace
from fimaudit.blackbox import sequential
from fimaudit.linalg.sketch import gram_sketch

XP = namespace(np.zeros(1))


class ExactLaw:
    """The operator ``sequential_norm`` reads, for n independent runs on one factor A: each run
    answers its next m probes with the next m columns of U Σ Oᵀ."""

    def __init__(self, A, n, rng):
        self.n, (self.C, self.d) = n, A.shape
        self.input_shape = (self.d,)
        U, s, _ = np.linalg.svd(A, full_matrices=False)
        self.US = U * s
        self.O = []
        for _ in range(n):
            Q, R = np.linalg.qr(rng.standard_normal((self.d, self.C)))
            self.O.append(Q * np.sign(np.diag(R)))
        self.pos = np.zeros(n, dtype=np.int64)
        self.logits = np.zeros((n, self.C))
        self.ledger = types.SimpleNamespace(bounded=False)

    def sketch(self, Q, inputs):
        m, out = int(Q.shape[1]), []
        for i in inputs:
            out.append(self.US @ self.O[i][self.pos[i] : self.pos[i] + m].T)
            self.pos[i] += m
        return np.stack(out)

    def columns(self, i):
        """S_d = U Σ Oᵀ (C × d) of run i: every probe it could draw, in order."""
        return self.US @ self.O[i].T


def _no_probes(xp, op, blocks, idx, m, *rest):
    return np.zeros((len(idx), m, 0))  # the exact law needs no probe vectors


def sequential_runs(A, tol, n, rng):
    """The library's sequential sketch on n independent runs of A's exact law, and the law."""
    op = ExactLaw(A, n, rng)
    real, sequential._draw = sequential._draw, _no_probes
    try:
        out = sequential.sequential_norm(XP, op, tol, 2, "random", seed=0)
    finally:
        sequential._draw = real
    return out, op


def oracle(S, lam, tol):
    """First k at which |(d/k) λ_max(S_k S_kᵀ)/λ − 1| ≤ tol, S = S_d (C × d) in draw order."""
    C, d = S.shape
    grams = np.cumsum(S.T[:, :, None] * S.T[:, None, :], axis=0)  # (d, C, C): Σ_{j ≤ k} s_j s_jᵀ
    k = np.arange(1, d + 1)
    err = np.abs((d / k) * np.linalg.eigvalsh(grams)[:, -1] / lam - 1)
    return int(k[np.argmax(err <= tol)]) if np.any(err <= tol) else d


def fixed_budget(A, op, lam, probes):
    """The fixed sketch of the first ``probes`` probes of each run (the library's gram_sketch):
    relative errors of its value, its coverage and relative half-width."""
    S = np.stack([op.columns(i)[:, :probes] for i in range(op.n)])
    est = gram_sketch(XP, S, op.d, True)
    hw = (est.high - est.low) / (est.high + est.low)
    return np.abs(est.value / lam - 1), (est.low <= lam * (1 + 1e-9)) & (lam * (1 - 1e-9) <= est.high), hw


HEADER = (
    "| model | d | tol | calls per input | oracle's calls | ratio | coverage | lower / truth "
    "| median rel. error | met tol |\n|---|---|---|---|---|---|---|---|---|---|"
)


def rows(name, factors, tols, seeds, setup, rng):
    """Table rows for one model: ``factors`` (inputs × C × d), ``seeds`` runs per input."""
    d = factors.shape[2]
    for tol in tols:
        calls, ocalls, cover, low, err, met = [], [], [], [], [], []
        for A in factors:
            lam = np.linalg.svd(A, compute_uv=False)[0] ** 2
            out, op = sequential_runs(A, tol, seeds, rng)
            calls += list(setup + 2 * out["k"])
            ocalls += [setup + 2 * oracle(op.columns(i), lam, tol) for i in range(seeds)]
            cover += list((out["low"] <= lam * (1 + 1e-9)) & (lam * (1 - 1e-9) <= out["high"]))
            low += list(out["low"] / lam)
            err += list(np.abs(out["value"] / lam - 1))
            met += list(out["tol_met"])
        print(
            f"| {name} | {d:,} | {tol} | {np.mean(calls):,.0f} | {np.mean(ocalls):,.0f} "
            f"| {np.mean(calls) / np.mean(ocalls):.1f} | {np.mean(cover):.2f} | {np.median(low):.3f} "
            f"| {np.median(err):.2e} | {np.mean(met):.2f} |",
            flush=True,
        )


def budget_rows(name, factors, seeds, setup, rng, budget=201):
    """The fixed sketch at ``budget`` calls on the same exact law."""
    probes = (budget - setup) // 2
    errs, cover, hws = [], [], []
    for A in factors:
        lam = np.linalg.svd(A, compute_uv=False)[0] ** 2
        op = ExactLaw(A, seeds, rng)
        e, c, h = fixed_budget(A, op, lam, probes)
        errs += list(e)
        cover += list(c)
        hws += list(h)
    print(
        f"| {name} | {factors.shape[2]:,} | {budget} ({probes} probes) | {np.median(errs):.2e} "
        f"| {np.quantile(errs, 0.9):.2e} | {np.mean(cover):.2f} | {np.median(hws):.2f} |",
        flush=True,
    )


BUDGET_HEADER = (
    "| model | d | budget | median rel. error | 90th pct rel. error | coverage | median relative half-width |\n"
    "|---|---|---|---|---|---|---|"
)


def spectra(tols, d, seeds, setup):
    """Rows for the spectra hard for an interval (flat, two equal, rank 1) and an easy one
    (geometric), C = 10 at d input entries: the stopped and the fixed-budget intervals on
    the exact law of the same factor, ``seeds`` independent runs each."""
    from fimaudit.testing import SPECTRA, spectral_jacobian

    rng = np.random.default_rng(5)
    names = {"flat": "flat (9 equal)", "two-equal": "two equal", "rank-1": "rank 1", "geometric": "geometric (1/2)"}
    factors = [(names[k], spectral_jacobian(mu, d, rng)[None]) for k, mu in SPECTRA.items()]
    print(
        f"\nsimulated spectra (C = 10, d = {d:,}), exact law of the sketch: {seeds} seeds each; "
        f"calls = set-up {setup} + 2 per probe"
    )
    print(HEADER)
    for name, A in factors:
        rows(name, A, tols, seeds, setup, rng)
    print("\nthe fixed sketch at 201 calls on the same spectra (its 95% interval)")
    print(BUDGET_HEADER)
    for name, A in factors:
        budget_rows(name, A, seeds, setup, rng)


def at_64(make):
    """``make``'s CNN for 3 × 64 × 64 inputs: one more pooling layer before its flatten."""

    def build():
        from torch import nn

        layers = list(make())
        at = next(i for i, m in enumerate(layers) if isinstance(m, nn.Flatten))
        pool = nn.MaxPool2d(2) if any(isinstance(m, nn.MaxPool2d) for m in layers) else nn.AvgPool2d(2)
        return nn.Sequential(*layers[:at], pool, *layers[at:])

    return build


def cnns(models, tols, inputs, seeds, service):
    """Rows for random-init CNNs at 32 × 32 and 64 × 64 (d = 3,072 and 12,288); the set-up calls."""
    import torch
    from _tol import fisher_factor

    import fimaudit as fa

    out = []
    for name, make in models:
        for side, build in ((32, make), (64, at_64(make))):
            torch.manual_seed(0)
            net = build().eval()
            x = torch.rand(inputs, 3, side, side).numpy()
            A = fisher_factor(net, x)
            setup = fa.wrap(service(net), input_shape=(3, side, side), output="probs").costs().setup
            out.append((f"{name}, {side}×{side}", A, setup))
    print(
        f"\nrandom-init CNNs, exact law of the sketch from a dense float64 Jacobian (benchmarks/_tol_law.py): "
        f"{inputs} inputs × {seeds} seeds each; calls = set-up {out[0][2]} + 2 per probe (central differences)"
    )
    print(HEADER)
    rng = np.random.default_rng(2)
    for name, A, setup in out:
        rows(name, A, tols, seeds, setup, rng)
    print("\nthe fixed sketch at 201 calls on the same exact law (its 95% interval)")
    print(BUDGET_HEADER)
    for name, A, setup in out:
        budget_rows(name, A, seeds, setup, rng)
    return out[0][2]


def rank_one_bound(ds, tols, setup, runs=400, level=0.95, seed=3):
    """Rows: the fewest probes k at which any 95% interval valid for a rank-1 Fisher can be
    within ±tol, against the oracle's probes on the same spectrum.

    At rank 1, F = λ w wᵀ, the sketch is S = √λ u (Q w)ᵀ and ‖S‖² = λ B with
    B = ‖Q w‖² ~ Beta(k/2, (d − k)/2), whatever the probes' order: λ is the scale of one
    observation of a known law, and ‖S‖² is sufficient (the rest of S is u and a uniform
    direction). A scale-equivariant interval is [‖S‖²/b₊, ‖S‖²/b₋] with P(b₋ ≤ B ≤ b₊) ≥ level,
    relative half-width (b₊ − b₋)/(b₊ + b₋); by the Hunt–Stein theorem (the scale group is
    amenable) none of any form is narrower in the minimax sense. k_min minimises it over the
    split of 1 − level between the ends; the oracle stops at the first k where
    |(d/k) B_k − 1| ≤ tol along its own draws."""
    from scipy import stats

    def width(k, d):
        best = np.inf
        for lo in np.linspace(0.0005, 1 - level - 0.0005, 50):
            b_lo, b_hi = stats.beta.ppf([lo, lo + level], k / 2, (d - k) / 2)
            best = min(best, (b_hi - b_lo) / (b_hi + b_lo))
        return best

    rng = np.random.default_rng(seed)
    print(
        f"\nrank 1: the fewest probes for any valid two-sided {level:.0%} interval within ±tol "
        f"(k_min), calls = {setup} + 2k, against the oracle's mean over {runs} draws"
    )
    print("| d | tol | k_min | calls at k_min | oracle's mean calls | ratio | sequential sketch's first look |")
    print("|---|---|---|---|---|---|---|")
    for d in ds:
        for tol in tols:
            lo, hi = 2, d - 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if width(mid, d) <= tol else (mid, hi)
            first = []
            for _ in range(runs):
                w2 = rng.standard_normal(d) ** 2
                k = np.arange(1, d + 1)
                err = np.abs((d / k) * np.cumsum(w2) / w2.sum() - 1)
                first.append(int(k[np.argmax(err <= tol)]))
            oc = setup + 2 * np.mean(first)
            look = sequential.first_look(d, tol, 1 - level)
            print(
                f"| {d:,} | {tol} | {hi:,} | {setup + 2 * hi:,} | {oc:,.0f} | {(setup + 2 * hi) / oc:.1f} "
                f"| {look:,} ({setup + 2 * look:,} calls) |",
                flush=True,
            )


def digits(archs, tols, inputs, seeds, service):  # noqa: C901
    """The real black box (finite differences, the library's own probes) on digits models of
    the validation study's zoo, trained with its code on 270 of the shipped 360 test digits
    (8 × 8, d = 64); the other 90 are audited. Truth: float64 autodiff. The oracle draws its own
    probes (the exact law) and stops at the first k where its true error is ≤ tol."""
    import torch
    from _tol import fisher_factor
    from validation.train import train
    from validation.zoo import build

    import fimaudit as fa
    from fimaudit.demo import demo_paths

    data = np.load(demo_paths()[1])
    X, y = data["X_test"].astype(np.float32), data["y_test"].astype(np.int64)
    Xtr, ytr, Xte = X[:270], y[:270], X[270 : 270 + inputs]
    print(
        f"\ndigits models (the validation zoo, trained on 270 digits; d = 64, C = 10): the real black box, "
        f"{inputs} inputs × {seeds} seeds, finite differences on float32 probabilities"
    )
    print(HEADER)
    rng = np.random.default_rng(4)
    for arch in archs:
        torch.manual_seed(0)
        net = train(build(arch, (1, 8, 8), 10, Xtr.mean(0), Xtr.std(0)), Xtr, ytr, epochs=60)
        acc = float((net(torch.from_numpy(X[270:])).argmax(1).numpy() == y[270:]).mean())
        A = fisher_factor(net, Xte)
        lam = np.linalg.eigvalsh(A @ np.swapaxes(A, 1, 2))[:, -1]
        with warnings.catch_warnings():  # a black box on purpose
            warnings.simplefilter("ignore", fa.errors.BlackBoxFallbackWarning)
            bb = fa.wrap(service(net), input_shape=(1, 8, 8), output="probs", accepts="numpy")
        setup = bb.costs().setup
        laws = [ExactLaw(A[i], seeds, rng) for i in range(inputs)]  # the oracle's own draws
        stops = np.array(
            [[[oracle(w.columns(s), lam[i], t) for t in tols] for i, w in enumerate(laws)] for s in range(seeds)]
        )
        for j, tol in enumerate(tols):
            calls, cover, low, err, met = [], [], [], [], []
            for s in range(seeds):
                r = fa.fisher_norm(bb, Xte, method="sketch", tol=tol, seed=100 * s)
                calls += list(r.queries)
                cover += list((r.lower <= lam * (1 + 1e-9)) & (lam * (1 - 1e-9) <= r.upper))
                low += list(r.lower / lam)
                err += list(np.abs(r.value / lam - 1))
                met += list(r.tol_met)
            oc = setup + 2 * stops[:, :, j]
            print(
                f"| {arch} (test accuracy {acc:.2f}) | 64 | {tol} | {np.mean(calls):,.0f} | {np.mean(oc):,.0f} "
                f"| {np.mean(calls) / np.mean(oc):.1f} | {np.mean(cover):.2f} | {np.median(low):.3f} "
                f"| {np.median(err):.2e} | {np.mean(met):.2f} |",
                flush=True,
            )
