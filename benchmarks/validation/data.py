"""Offline datasets in their natural input range.

- digits (scikit-learn ``load_digits``): 8×8 grey images, pixel values 0..16 divided by 16,
  so an input lives in [0, 1]^(1×8×8) and attacks clip to that box.
- breast_cancer (``load_breast_cancer``): 30 tabular features with units from 1e-3 to 1e3.
  Each feature is mapped to [0, 1] by the dataset's own range (a fixed, documented unit
  change, not a learned normalisation), so one ℓ2/ℓ∞ budget means the same fraction of every
  feature's range; attacks clip to [0, 1]^30.

Standardisation (mean/std from the training split) is the first layer of every model, so
attacks and fimaudit both see raw [0, 1] inputs — never normalised tensors.
"""

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split


def load(name, seed=0):
    """(X_train, y_train, X_test, y_test, input_shape) as float32/int64 numpy arrays."""
    if name == "digits":
        d = load_digits()
        X, shape = (d.images / 16.0)[:, None], (1, 8, 8)
    elif name == "breast_cancer":
        d = load_breast_cancer()
        lo, hi = d.data.min(0), d.data.max(0)
        X, shape = (d.data - lo) / (hi - lo), (30,)
    else:
        raise ValueError(f"unknown dataset {name!r}; use 'digits' or 'breast_cancer'")
    Xtr, Xte, ytr, yte = train_test_split(
        X.astype(np.float32), d.target.astype(np.int64), test_size=0.25, random_state=seed, stratify=d.target
    )
    return Xtr, ytr, Xte, yte, shape
