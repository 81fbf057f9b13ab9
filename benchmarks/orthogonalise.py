"""Drawing the sequential sketch's probes: ways to orthogonalise each new block against the
kept basis, side by side in one run.

    python benchmarks/orthogonalise.py [--quick]

For d = 3,072 and 12,288 the probes of one input are drawn block after block at the probe
counts of the sequential sketch's looks (tol = 0.05, up to ``kmax``); each block of m Haar rows
is made orthogonal to the k rows kept so far and orthonormal in itself. Methods:

* ``cgs2+householder``: classical Gram–Schmidt against the kept rows twice, then a Householder
  QR of the block (LAPACK geqrf + orgqr);
* ``cgs2+cholqr2``: the same projections, then CholeskyQR2 (Fukaya, Nakatsukasa, Yanagisawa &
  Yamamoto, "CholeskyQR2: a simple and communication-avoiding algorithm for computing a tall-
  skinny QR factorization", ScalA 2014): R = chol(GᵀG), G ← G R⁻¹, twice;
* ``bcgs2+cholqr`` (and fimaudit's :func:`~fimaudit.blackbox.probes.extend`, which runs it
  through the array API): block Gram–Schmidt twice with one CholeskyQR per pass (project, CholeskyQR,
  project, CholeskyQR: Barlow & Smoktunowicz, Numer. Math. 123 (2013)), the same flops as the
  one before, but the second factor is close to I, so it does not magnify what the projections
  left of the kept rows.

Each prints seconds for the whole sequence of blocks of one input (numpy/OpenBLAS float64),
the ratio to the first, and the loss of orthogonality ``max |Q Qᵀ − I|`` over all rows drawn.
All three give the same Haar law: the Q factor with a positive-diagonal R is unique.
"""

import argparse
import os
import sys
import time

import numpy as np
from scipy.linalg import cholesky, solve_triangular

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fimaudit._array import namespace  # noqa: E402
from fimaudit.blackbox import probes  # noqa: E402
from fimaudit.blackbox.sequential import looks  # noqa: E402

XP = namespace(np.zeros(1))


def project(Q, G):
    return G - Q.T @ (Q @ G)


def householder(G):
    P, R = np.linalg.qr(G)
    s = np.sign(np.diag(R))
    return P * np.where(s == 0, 1.0, s)


def cholqr(G):
    R = cholesky(G.T @ G, lower=False)
    return solve_triangular(R, G.T, trans="T", lower=False).T  # G R⁻¹


def cgs2_householder(Q, G):
    return householder(project(Q, project(Q, G)))


def cgs2_cholqr2(Q, G):
    return cholqr(cholqr(project(Q, project(Q, G))))


def bcgs2_cholqr(Q, G):
    return cholqr(project(Q, cholqr(project(Q, G))))


def library(Q, G):
    """fimaudit's own: :func:`fimaudit.blackbox.probes.extend` (BCGS2, CholeskyQR through the array
    API's general solve, which has no triangular one), on a batch of one input."""
    if len(Q) == 0:
        return probes.orthonormalise(XP, G[None])[0]
    return probes.extend(XP, Q[None], G.shape[1], seed=len(Q))[0].T


METHODS = {
    "cgs2+householder": cgs2_householder,
    "cgs2+cholqr2": cgs2_cholqr2,
    "bcgs2+cholqr": bcgs2_cholqr,
    "fimaudit (bcgs2+cholqr, array API)": library,
}


def draw(method, d, plan, seed):
    rng = np.random.default_rng(seed)
    Q = np.zeros((0, d))
    t0 = time.perf_counter()
    for k_old, k_new in zip([0] + plan[:-1], plan):
        G = rng.standard_normal((d, k_new - k_old))
        Q = np.concatenate([Q, METHODS[method](Q, G).T])
    seconds = time.perf_counter() - t0
    loss = np.abs(Q @ Q.T - np.eye(len(Q))).max()
    return seconds, loss


class Tee:
    """Standard output also written to a results file."""

    def __init__(self, path):
        self.file, self.out = open(path, "w", encoding="utf-8"), sys.stdout

    def write(self, text):
        self.file.write(text)
        self.out.write(text)

    def flush(self):
        self.file.flush()
        self.out.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--case", action="append", help="D,TOL,KMAX instead of the default cases, e.g. 12288,0.1,2000")
    args = ap.parse_args()
    if args.out:
        sys.stdout = Tee(args.out)
    cases = [(3072, 0.05, None), (3072, 0.1, None), (12288, 0.1, 5000)] if not args.quick else [(3072, 0.1, 1500)]
    if args.case:
        cases = [(int(d), float(t), int(k)) for d, t, k in (c.split(",") for c in args.case)]
    print(f"machine: {os.cpu_count()} CPUs, numpy {np.__version__}; seconds for all blocks of one input")
    print("| d | looks of tol | probes drawn | blocks | method | seconds | ratio | max abs(Q Qᵀ − I) |")
    print("|---|---|---|---|---|---|---|---|")
    for d, tol, kmax in cases:
        plan = looks(d, tol, 0.05, kmax)
        base = None
        for name in METHODS:
            seconds, loss = draw(name, d, plan, seed=d)
            base = seconds if base is None else base
            cells = [f"{d:,}", tol, f"{plan[-1]:,}", len(plan), name, f"{seconds:.2f}", f"{seconds / base:.2f}"]
            print("| " + " | ".join(map(str, cells)) + f" | {loss:.1e} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
