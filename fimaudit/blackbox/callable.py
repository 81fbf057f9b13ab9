"""A plain callable as a (forward-only) model.

``fn`` maps a batch of inputs, shape (m, *input_shape), to outputs of shape (m, C):
logits (means for a Gaussian likelihood), or probabilities (``output="probs"``, the default
for the categorical and Bernoulli likelihoods). Batches are cut to ``batch_size`` rows per
call; every answer is validated before any number is computed from it (its shape, and for
probabilities what the likelihood accepts), and every row sent is counted (``calls``). An answer
whose every row is a hard label (probabilities exactly 0 or 1, one-hot for a categorical model) is
refused with :class:`~fimaudit.errors.InvalidModelOutputError`: the Fisher information of hard-label
outputs is not defined (:meth:`fimaudit.likelihoods.Likelihood.hard_labels`).

``cache="answers.sqlite", cache_key="my-model-v3"`` keeps every answer in a content-addressed
SQLite cache, so a rerun (after a crash, or of the same audit) sends no row twice. Answers are
looked up by ``cache_key`` and the row's bytes, never by the function's code: a function's code
does not change when the weights behind it do, so the key must name the model and its version,
and a retrained model needs a new one. A different key never reads another key's answers. Rows
read back are validated like fresh answers; one that would be refused (unreadable, of the wrong
length, not finite, not probabilities) is asked again and replaced. ``identity`` is the key.
With a cache, the finite-difference noise probe's repeated query is answered from the cache, so
nondeterminism shows only in the probe's other points.
"""

from __future__ import annotations

import numpy as np

from .._array import namespace, to_numpy
from ..errors import InvalidArgumentError, InvalidModelOutputError
from ..likelihoods import get_likelihood
from ..models import Model

__all__ = ["CallableModel"]


class CallableModel(Model):
    """``fn`` as a model with ``forward`` only. ``accepts="any"`` passes the caller's
    arrays (numpy or CuPy) through; ``accepts="numpy"`` converts them for ``fn``.

    >>> import numpy as np
    >>> m = CallableModel(lambda b: np.full((len(b), 2), 0.5), input_shape=(3,), cache_key="halves-v1")
    >>> m.forward(np.zeros((4, 3))).shape, m.calls, m.output, m.identity
    ((4, 2), 4, 'probs', 'halves-v1')
    """

    has_jvp = False
    has_vjp = False
    fixed_batch = None  # rows per call the model must be sent (None: any number)

    def __init__(
        self,
        fn,
        *,
        input_shape=None,
        output=None,
        num_outputs=None,
        batch_size=None,
        accepts="any",
        prob_tol=1e-3,
        likelihood="categorical",
        sigma=1.0,
        cache=None,
        cache_key=None,
    ):
        if input_shape is None:
            raise InvalidArgumentError(
                "wrapping a callable needs input_shape=(...) (one input's shape, without the batch axis)"
            )
        if output is None:  # a Gaussian model outputs means; the others are served as probabilities
            output = "logits" if likelihood == "gaussian" else "probs"
        super().__init__(
            input_shape=input_shape, num_outputs=num_outputs, output=output, likelihood=likelihood, sigma=sigma
        )
        if accepts not in ("any", "numpy"):
            raise InvalidArgumentError(f"accepts must be 'any' or 'numpy', got {accepts!r}")
        if batch_size is not None and not (isinstance(batch_size, int) and batch_size > 0):
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        if cache_key is not None and not (isinstance(cache_key, str) and cache_key.strip()):
            raise InvalidArgumentError(f"cache_key must be a non-empty string naming the model, got {cache_key!r}")
        if cache is not None and cache_key is None:
            raise InvalidArgumentError(
                "caching a callable's answers needs cache_key='...' naming the model and its version "
                "(e.g. cache_key='fraud-model-v3'): answers are looked up by that key, so a retrained "
                "model behind the same function must get a new key to be queried again"
            )
        self.fn = fn
        self.batch_size = batch_size
        self.accepts = accepts
        self.prob_tol = float(prob_tol)
        self.calls = 0  # rows evaluated so far (cache hits excluded)
        self._identity = cache_key
        self.cache = None
        if cache is not None:  # answers kept across runs: a rerun after a crash pays for no row twice
            from .cache import QueryCache

            self.cache = QueryCache(cache)

    def forward(self, x):
        xp = namespace(x)
        n = int(x.shape[0])
        step = self.batch_size or max(n, 1)
        parts = [self._call(xp, x[lo : lo + step, ...]) for lo in range(0, n, step)]
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)

    def _ask(self, chunk):
        raw = self.fn(to_numpy(chunk) if self.accepts == "numpy" else chunk)
        self.calls += int(chunk.shape[0])
        return raw

    def _call(self, xp, chunk):
        if self.cache is not None:
            return self._cached(xp, chunk)
        return self._checked(xp, chunk, self._ask(chunk))

    def _cached(self, xp, chunk):
        from .cache import row_keys

        dev = getattr(chunk, "device", None)
        keys = row_keys(self.identity, np.ascontiguousarray(to_numpy(chunk)))
        answers = self._readable(self.cache.get_many(keys))
        miss = [i for i, k in enumerate(keys) if k not in answers]
        if miss:
            sub = chunk[xp.asarray(miss, device=dev)] if len(miss) < len(keys) else chunk
            out = to_numpy(self._checked(xp, sub, self._ask(sub))).astype(np.float64)
            fresh = [(keys[i], row) for i, row in zip(miss, out)]
            self.cache.put_many([(k, list(map(float, row))) for k, row in fresh])
            answers.update(fresh)
        return xp.asarray(np.stack([answers[k] for k in keys]), dtype=chunk.dtype, device=dev)

    def _readable(self, cached):
        """The cached rows that would pass as fresh answers (float64 arrays); the rest are asked again."""
        rows = {}
        for k, v in cached.items():
            try:
                a = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                continue
            if a.ndim == 1 and a.size and np.all(np.isfinite(a)):
                rows[k] = a
        C = self.num_outputs
        if C is None and rows:  # not yet known: the length most cached rows have
            lengths, counts = np.unique([a.size for a in rows.values()], return_counts=True)
            C = int(lengths[np.argmax(counts)])
        rows = {k: a for k, a in rows.items() if a.size == C}
        if rows and self.output == "probs":
            keys = list(rows)
            bad, _ = self._likelihood_of().invalid_probs(np.stack([rows[k] for k in keys]), self.prob_tol)
            rows = {k: rows[k] for k, b in zip(keys, bad) if not b}
        return rows

    def _likelihood_of(self):
        return get_likelihood(self.likelihood, self.sigma)

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
            p = to_numpy(out).astype(np.float64)
            _, why = self._likelihood_of().invalid_probs(p, self.prob_tol)
            why = why or self._likelihood_of().hard_labels(p)
            if why is not None:
                raise InvalidModelOutputError(why)
        return out

    def jvp(self, x, v):
        raise NotImplementedError("a callable model has no jvp: wrap it in FiniteDifferenceModel")

    def vjp(self, x, u):
        raise NotImplementedError("a black-box model has no vjp")
