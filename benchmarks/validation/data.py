"""Offline datasets in their natural input range.

- digits (scikit-learn ``load_digits``): 8×8 grey images, pixel values 0..16 divided by 16,
  so an input lives in [0, 1]^(1×8×8) and attacks clip to that box.
- breast_cancer (``load_breast_cancer``): 30 tabular features with units from 1e-3 to 1e3.
  Each feature is mapped to [0, 1] by the dataset's own range (a fixed, documented unit
  change, not a learned normalisation), so one ℓ2/ℓ∞ budget means the same fraction of every
  feature's range; attacks clip to [0, 1]^30.
- mnist1d: MNIST-1D (Greydanus, 2020, "Scaling down deep learning", arXiv:2011.14439), generated
  here from the paper's recipe (``mnist1d``): 10 classes of 1-D signals of length 40, mapped to
  [0, 1] by the generated set's range (one affine map for all 40 positions); input (1, 40).

Standardisation (mean/std from the training split) is the first layer of every model, so
attacks and fimaudit both see raw [0, 1] inputs — never normalised tensors.
"""

import functools

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

# Ten class templates of 12 points each: distinct shapes (bumps, ramps, steps, oscillations), written for this
# generator. A sample is its class's template after every transformation of ``mnist1d``.
_u = np.linspace(0.0, 1.0, 12)
TEMPLATES = np.stack(
    [
        np.sin(np.pi * _u),  # 0: one bump
        np.exp(-(((_u - 0.5) / 0.08) ** 2)),  # 1: a narrow spike
        _u,  # 2: ramp up
        1.0 - 2.0 * _u,  # 3: ramp down through zero
        np.sin(2 * np.pi * _u),  # 4: up then down
        np.where(_u < 0.5, -0.5, 1.0),  # 5: step up
        np.abs(2 * _u - 1.0) * 2 - 1,  # 6: V
        np.sin(3 * np.pi * _u),  # 7: three lobes
        np.where((_u > 0.25) & (_u < 0.75), 1.0, 0.0),  # 8: square pulse
        np.cos(4 * np.pi * _u) * (1 - _u),  # 9: decaying oscillation
    ]
)
MNIST1D = dict(
    samples=5000, test=0.2, padding=(36, 60), max_shift=48, scale=0.4, corr_noise=0.25, iid_noise=0.02, shear=0.75,
    length=40,
)  # fmt: skip


def _smooth(v, sigma):
    k = np.exp(-0.5 * (np.arange(-3 * sigma, 3 * sigma + 1) / sigma) ** 2)
    return np.convolve(v, k / k.sum(), mode="same")


def mnist1d(samples=MNIST1D["samples"], seed=0, p=MNIST1D):
    """(X (samples, 40) float64, y) drawn from ``np.random.default_rng(seed)``. Per sample, after
    Greydanus (2020): the class template zero-padded to a random length in ``padding``, rolled
    circularly by up to ``max_shift`` positions, stretched about its centre by a factor
    1 + U(−scale, scale), plus smooth (Gaussian-filtered, σ = 2 positions) noise of scale
    ``corr_noise``, a shear (a linear trend of slope U(−shear, shear) over the window), then
    resampled to ``length`` points plus i.i.d. noise of scale ``iid_noise``. Classes are balanced."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(samples) % len(TEMPLATES))
    X = np.empty((samples, p["length"]))
    for i, c in enumerate(y):
        L = int(rng.integers(p["padding"][0], p["padding"][1] + 1))
        s = np.zeros(L)
        lo = (L - TEMPLATES.shape[1]) // 2
        s[lo : lo + TEMPLATES.shape[1]] = TEMPLATES[c]
        s = np.roll(s, int(rng.integers(-p["max_shift"], p["max_shift"] + 1)) % L)
        grid = np.linspace(-1.0, 1.0, L)
        stretch = 1.0 + p["scale"] * rng.uniform(-1, 1)
        s = np.interp(grid / stretch, grid, s, left=0.0, right=0.0)
        s = s + p["corr_noise"] * _smooth(rng.standard_normal(L), 2.0) * 2.0
        s = s + p["shear"] * rng.uniform(-1, 1) * grid
        out = np.interp(np.linspace(-1.0, 1.0, p["length"]), grid, s)
        X[i] = out + p["iid_noise"] * rng.standard_normal(p["length"])
    return X, y


@functools.cache
def _mnist1d_unit(seed):
    X, y = mnist1d(seed=seed)
    return (X - X.min()) / (X.max() - X.min()), y


def load(name, seed=0):
    """(X_train, y_train, X_test, y_test, input_shape) as float32/int64 numpy arrays."""
    if name == "digits":
        d = load_digits()
        X, target, shape = (d.images / 16.0)[:, None], d.target, (1, 8, 8)
    elif name == "breast_cancer":
        d = load_breast_cancer()
        lo, hi = d.data.min(0), d.data.max(0)
        X, target, shape = (d.data - lo) / (hi - lo), d.target, (30,)
    elif name == "mnist1d":
        X, target = _mnist1d_unit(seed)
        X, shape = X[:, None], (1, MNIST1D["length"])
    else:
        raise ValueError(f"unknown dataset {name!r}; use 'digits', 'breast_cancer' or 'mnist1d'")
    test = MNIST1D["test"] if name == "mnist1d" else 0.25
    Xtr, Xte, ytr, yte = train_test_split(
        X.astype(np.float32), target.astype(np.int64), test_size=test, random_state=seed, stratify=target
    )
    return Xtr, ytr, Xte, yte, shape
