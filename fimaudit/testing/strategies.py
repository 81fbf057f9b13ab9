"""Hypothesis strategies that come with their own exact answers.

* :func:`linear_models` — ``z = W x + b``: F(x) = Wᵀ M(z) W in closed form.
* :func:`mlp_models` — small tanh MLPs with hand-written Jacobians.
* :func:`psd_spectra` / :func:`spectral_linear_models` — Gaussian-likelihood linear
  models ``z = W x`` with ``W = U diag(√λ) Vᵀ``, so F = Wᵀ W / σ² has exactly the
  spectrum λ (σ = 1): known eigenvalues for trace and eigen-solver tests.
* :func:`inputs` — input batches for a model.

All draws are float64 numpy; pass ``dtype`` where a strategy offers it.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from .models import LinearModel, MLPModel

__all__ = ["linear_models", "mlp_models", "psd_spectra", "spectral_linear_models", "inputs", "likelihoods"]


def likelihoods():
    return st.sampled_from(["categorical", "bernoulli", "gaussian"])


def _orthonormal(rng, n, k):
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


@st.composite
def linear_models(draw, max_inputs=12, max_outputs=8, likelihood=None, scale=st.floats(0.1, 10.0)):
    """``LinearModel`` with random W (C × d), b; F has the closed form Wᵀ M W."""
    lik = draw(likelihoods()) if likelihood is None else likelihood
    d = draw(st.integers(1, max_inputs))
    C = draw(st.integers(2, max_outputs))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    W = rng.standard_normal((C, d)) * draw(scale) / math.sqrt(d)
    return LinearModel(W, rng.standard_normal(C), likelihood=lik)


@st.composite
def mlp_models(draw, max_inputs=10, max_hidden=12, max_outputs=8, max_layers=2, likelihood=None):
    """``MLPModel`` (tanh hidden layers, linear head) with hand-written Jacobians."""
    lik = draw(likelihoods()) if likelihood is None else likelihood
    layers = draw(st.integers(1, max_layers))
    sizes = [draw(st.integers(1, max_inputs))]
    sizes += [draw(st.integers(2, max_hidden)) for _ in range(layers)]
    sizes.append(draw(st.integers(2, max_outputs)))
    return MLPModel.random(sizes, seed=draw(st.integers(0, 2**32 - 1)), scale=draw(st.floats(0.3, 3.0)), likelihood=lik)


@st.composite
def psd_spectra(draw, size, decay=None):
    """A descending nonnegative spectrum of ``size`` values with top value 1.

    ``decay`` (a float p) gives λ_i = i^(−p); otherwise values are drawn freely.
    """
    if decay is not None:
        return np.arange(1, size + 1, dtype=np.float64) ** (-float(decay))
    vals = draw(st.lists(st.floats(0.0, 1.0), min_size=size, max_size=size))
    vals = np.sort(np.asarray(vals))[::-1].copy()
    vals[0] = 1.0
    return vals


@st.composite
def spectral_linear_models(draw, spectrum, d=None):
    """Gaussian ``z = W x`` with F = WᵀW having exactly the eigenvalues ``spectrum``
    (length C ≤ d), padded by d − C zeros."""
    spectrum = np.asarray(spectrum, np.float64)
    C = spectrum.size
    d = C if d is None else d
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    W = _orthonormal(rng, C, C) @ np.diag(np.sqrt(spectrum)) @ _orthonormal(rng, d, C).T
    return LinearModel(W, np.zeros(C), likelihood="gaussian")


@st.composite
def inputs(draw, model, max_batch=4, scale=st.floats(0.1, 3.0)):
    """A float64 batch (n, *input_shape) for ``model``."""
    n = draw(st.integers(1, max_batch))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.standard_normal((n, *model.input_shape)) * draw(scale)
