"""A plain callable as a (forward-only) model.

``fn`` maps a batch of inputs, shape (m, *input_shape), to outputs of shape (m, C):
logits, or probabilities (``output="probs"``). Batches are cut to ``batch_size`` rows
per call; every answer is validated before any number is computed from it, and every
row sent is counted (``calls``). ``cache="answers.sqlite"`` keeps every answer in a
content-addressed SQLite cache, so a rerun (after a crash, or of the same audit) sends
no row twice; use one cache file per model (keys name the function and its code, not
its weights). With a cache, the finite-difference noise probe's repeated query is answered
from the cache, so nondeterminism shows only in the probe's other points.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .._array import namespace, to_numpy
from .._validate import _show
from ..errors import InvalidArgumentError, InvalidModelOutputError
from ..models import Model

__all__ = ["CallableModel"]


class CallableModel(Model):
    """``fn`` as a model with ``forward`` only. ``accepts="any"`` passes the caller's
    arrays (numpy or CuPy) through; ``accepts="numpy"`` converts them for ``fn``."""

    has_jvp = False
    has_vjp = False

    def __init__(
        self,
        fn,
        *,
        input_shape=None,
        output="probs",
        num_outputs=None,
        batch_size=None,
        accepts="any",
        prob_tol=1e-3,
        likelihood="categorical",
        sigma=1.0,
        cache=None,
    ):
        if input_shape is None:
            raise InvalidArgumentError(
                "wrapping a callable needs input_shape=(...) (one input's shape, without the batch axis)"
            )
        super().__init__(
            input_shape=input_shape, num_outputs=num_outputs, output=output, likelihood=likelihood, sigma=sigma
        )
        if accepts not in ("any", "numpy"):
            raise InvalidArgumentError(f"accepts must be 'any' or 'numpy', got {accepts!r}")
        if batch_size is not None and not (isinstance(batch_size, int) and batch_size > 0):
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.fn = fn
        self.batch_size = batch_size
        self.accepts = accepts
        self.prob_tol = float(prob_tol)
        self.calls = 0  # rows evaluated so far (cache hits excluded)
        self.cache = None
        if cache is not None:  # answers kept across runs: a rerun after a crash pays for no row twice
            from .cache import QueryCache

            self.cache = QueryCache(cache)
            code = getattr(fn, "__code__", None)
            digest = (
                "" if code is None else hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:12]
            )
            self._cache_name = (
                f"callable:{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}:{digest}"
            )

    def forward(self, x):
        xp = namespace(x)
        n = int(x.shape[0])
        step = self.batch_size or max(n, 1)
        parts = [self._call(xp, x[lo : lo + step, ...]) for lo in range(0, n, step)]
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)

    def _call(self, xp, chunk):
        if self.cache is not None:
            return self._cached(xp, chunk)
        m = int(chunk.shape[0])
        raw = self.fn(to_numpy(chunk) if self.accepts == "numpy" else chunk)
        self.calls += m
        return self._checked(xp, chunk, raw)

    def _cached(self, xp, chunk):
        from .cache import row_keys

        host = np.ascontiguousarray(to_numpy(chunk))
        keys = row_keys(self._cache_name, host)
        answers = self.cache.get_many(keys)
        miss = [i for i, k in enumerate(keys) if k not in answers]
        if miss:
            sub = chunk[xp.asarray(miss, device=getattr(chunk, "device", None))] if len(miss) < len(keys) else chunk
            raw = self.fn(to_numpy(sub) if self.accepts == "numpy" else sub)
            self.calls += len(miss)
            out = to_numpy(self._checked(xp, sub, raw)).astype(np.float64)
            fresh = [(keys[i], list(map(float, row))) for i, row in zip(miss, out)]
            self.cache.put_many(fresh)
            answers.update(fresh)
        return xp.asarray(
            np.asarray([answers[k] for k in keys]), dtype=chunk.dtype, device=getattr(chunk, "device", None)
        )

    def _checked(self, xp, chunk, raw):
        m = int(chunk.shape[0])
        try:
            out = xp.asarray(raw, dtype=chunk.dtype, device=getattr(chunk, "device", None))
        except Exception:
            try:
                out = xp.asarray(np.asarray(to_numpy(raw), dtype=np.float64), dtype=chunk.dtype)
            except Exception as err:
                raise InvalidModelOutputError(
                    f"the model answered a batch of {m} with {type(raw).__name__}, not an array of outputs: {err}"
                ) from None
        if out.ndim != 2 or int(out.shape[0]) != m:
            raise InvalidModelOutputError(
                f"the model answered a batch of {m} inputs with an array of shape {tuple(out.shape)}; "
                f"expected ({m}, C): one row of outputs per input, in order"
            )
        if self.num_outputs is not None and int(out.shape[1]) != self.num_outputs:
            raise InvalidModelOutputError(
                f"the model returned {out.shape[1]} outputs per input; expected num_outputs={self.num_outputs}"
            )
        if self.num_outputs is None:
            self.num_outputs = int(out.shape[1])
        if self.output == "probs":
            self._check_probs(xp, out)
        return out

    def _check_probs(self, xp, p):
        host = to_numpy(p).astype(np.float64)
        bad_nan = np.flatnonzero(~np.all(np.isfinite(host), axis=1))
        if bad_nan.size:
            raise InvalidModelOutputError(
                f"the model returned NaN or infinite probabilities in rows {_show(bad_nan)} of a batch"
            )
        bad_neg = np.flatnonzero(np.any(host < -self.prob_tol, axis=1))
        if bad_neg.size:
            raise InvalidModelOutputError(
                f"the model returned negative probabilities in rows {_show(bad_neg)} (min {host.min():.3g}); "
                "if it returns logits or log-probabilities, wrap it with output='logits'"
            )
        if self.likelihood == "categorical":
            sums = host.sum(axis=1)
            bad = np.flatnonzero(np.abs(sums - 1.0) > self.prob_tol)
            if bad.size:
                raise InvalidModelOutputError(
                    f"probabilities in rows {_show(bad)} sum to {sums[bad[0]]:.6g}, not 1 (tolerance {self.prob_tol}); "
                    "for independent per-class probabilities use likelihood='bernoulli', for scores output='logits'"
                )
        elif np.any(host > 1.0 + self.prob_tol):
            raise InvalidModelOutputError("the model returned probabilities above 1")

    def jvp(self, x, v):
        raise NotImplementedError("a callable model has no jvp: wrap it in FiniteDifferenceModel")

    def vjp(self, x, u):
        raise NotImplementedError("a black-box model has no vjp")
