"""The sequential sketch (``tol=``) against an oracle, on simulated spectra and on CNNs.

For each case and tol: the calls per input the sequential sketch used (mean, and as a ratio
to the oracle's), the coverage of its 95% interval, lower end / truth, the median relative
error of its value, and how many inputs met tol. The oracle draws its own orthonormal probes
(without replacement) with exact products and stops at the first k (on a grid of 8) where
the true relative error of the scaled sketch's top eigenvalue falls under tol; it knows the
truth, so no method that does not can match it — the ratio shows what a valid interval costs.
Simulated spectra: a linear model with a jvp (exact products, 1 call per probe), d = 256.
CNNs: float32 models served as probabilities (finite differences, 2 calls per probe), truth
from autodiff in float64.
"""

import time

import numpy as np
import torch

import fimaudit as fa
from fimaudit.testing import SPECTRA, ForwardLinearModel, spectral_jacobian

C = len(SPECTRA["flat"])
LABELS = {"flat": "flat (9 equal)", "two-equal": "two equal", "rank-1": "rank 1", "geometric": "geometric (1/2)"}


def oracle_probes(A, lam, tols, rng, first=512):
    """Per tol, the first k (grid of 8, then d) at which |(d/k) λ_max(A Q_kᵀ Q_k Aᵀ)/λ − 1| ≤ tol,
    Q_k the first k of d orthonormal rows drawn without replacement (a first block, then all d)."""
    d = A.shape[1]
    for kmax in (min(first, d), d):
        S = A @ np.linalg.qr(rng.standard_normal((d, kmax)))[0]
        errs = {}
        for k in list(range(8, kmax, 8)) + [kmax]:
            errs[k] = abs((d / k) * np.linalg.eigvalsh(S[:, :k] @ S[:, :k].T)[-1] / lam - 1)
        found = [next((k for k, e in errs.items() if e <= tol), None) for tol in tols]
        if all(f is not None for f in found) or kmax == d:
            return [d if f is None else f for f in found]


def row(label, tol, calls, oracle, r, lam):
    cover = np.mean((r.lower <= lam * (1 + 1e-9)) & (lam * (1 - 1e-9) <= r.upper))
    err = np.abs(r.value / lam - 1)
    print(
        f"| {label} | {tol} | {np.mean(calls):,.0f} | {np.mean(oracle):,.0f} | {np.mean(calls) / np.mean(oracle):.1f} "
        f"| {cover:.2f} | {np.median(r.lower / lam):.3f} | {np.median(err):.2e} | {np.mean(r.tol_met):.2f} |"
    )


HEADER = (
    "| case | tol | calls per input | oracle's calls | ratio | coverage | lower / truth | median rel. error "
    "| met tol |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def simulated(tols, n, d=256):
    print(f"\nsimulated spectra: C = {C}, d = {d}, {n} seeds (inputs), exact products (1 call per probe + 1 forward)")
    print(HEADER)
    rng = np.random.default_rng(0)
    for name, mu in SPECTRA.items():
        J = spectral_jacobian(mu, d, rng)
        lam = np.linalg.eigvalsh(J @ J.T)[-1]
        oracle = np.array([oracle_probes(J, lam, tols, rng) for _ in range(n)])
        for i, tol in enumerate(tols):
            r = fa.fisher_norm(
                ForwardLinearModel(J, likelihood="gaussian"), np.zeros((n, d)), method="sketch", tol=tol, batch_size=10
            )
            row(LABELS[name], tol, r.queries, 1 + oracle[:, i], r, np.full(n, lam))


def fisher_factor(net, x):
    """A (n, C, d) float64 with AᵀA = F: rows √p_c ∇ log p_c."""
    out = []
    for xi in x:
        xi = torch.from_numpy(xi[None]).double().requires_grad_(True)
        logp = torch.log_softmax(net.double()(xi), dim=1)[0]
        g = torch.stack([torch.autograd.grad(logp[c], xi, retain_graph=True)[0].flatten() for c in range(C)])
        out.append((logp.detach().exp().sqrt()[:, None] * g).numpy())
    net.float()
    return np.stack(out)


def cnns(models, tols, n, service):
    for name, make in models:
        torch.manual_seed(0)
        net = make().eval()
        x = torch.rand(n, 3, 32, 32).numpy()
        A = fisher_factor(net, x)
        lam = np.linalg.eigvalsh(A @ np.swapaxes(A, 1, 2))[:, -1]
        served = dict(input_shape=(3, 32, 32), output="probs", accepts="numpy", batch_size=4096)
        bb = fa.wrap(service(net), **served)
        setup = bb.costs().setup
        print(
            f"\n{name}: d = 3072, C = {C}, {n} inputs (one seed each), finite differences "
            f"(set-up {setup} + 2 per probe)"
        )
        print(HEADER)
        rng = np.random.default_rng(1)
        oracle = np.array([oracle_probes(A[i], lam[i], tols, rng) for i in range(n)])
        for i, tol in enumerate(tols):
            t0 = time.perf_counter()
            r = fa.fisher_norm(bb, x, method="sketch", tol=tol, batch_size=10, memory_limit=1 << 31)
            row(f"{name} ({time.perf_counter() - t0:.0f} s)", tol, r.queries, setup + 2 * oracle[:, i], r, lam)
