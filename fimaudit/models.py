"""The model contract: :class:`Model` and :class:`Linearization` (plugin discovery and
``wrap()`` are in :mod:`fimaudit.plugins`).

An adapter maps a framework onto three batched products (docs/design.md):

* ``forward(x)`` — logits ``z(x)``, shape (n, C), for a batch x of shape (n, *input_shape);
* ``jvp(x, v)`` — ``J(x) v``, shape (n, C), for tangents v of x's shape;
* ``vjp(x, u)`` — ``J(x)ᵀ u``, shape (n, *input_shape), for cotangents u of shape (n, C).

Everything else is derived here or in the core: ``jvp_many``/``vjp_many`` (a k axis
of vectors per input, looped unless the adapter batches them) and ``linearize``
(products at a fixed x, which an adapter may speed up by keeping its forward pass).
Adapters hold no math. Plugins register under the entry-point group
``fimaudit.adapters`` an object with ``claims(obj) -> bool`` and
``wrap(obj, **options) -> Model``; ``claims`` must not import a framework.
"""

from __future__ import annotations

import copy

from ._array import namespace
from .errors import InvalidArgumentError
from .likelihoods import LIKELIHOODS

__all__ = ["Model", "Linearization"]

OUTPUTS = ("logits", "probs")
CONTRACT = ("input_shape", "num_outputs", "output", "likelihood", "sigma")


class Model:
    """Base class of every wrapped model. Subclasses implement forward, jvp and vjp.

    ``has_jvp``/``has_vjp`` say which products exist: a black-box model (finite
    differences) has jvp only, and the core then uses the jvp-only estimators.

    The contract — ``input_shape``, ``num_outputs``, ``output``, ``likelihood``, ``sigma`` —
    and the ``identity`` are stored once, on the model that produces the outputs. A model
    that passes on another model's outputs (finite differences, a test wrapper) names it in
    ``inner`` and reads the contract from it; ``with_options`` replaces it there, on copies.

    >>> import numpy as np
    >>> from fimaudit.testing import LinearModel
    >>> m = LinearModel(np.eye(3))
    >>> m.likelihood, m.with_options(likelihood="bernoulli").likelihood, m.likelihood
    ('categorical', 'bernoulli', 'categorical')
    """

    has_jvp = True
    has_vjp = True
    inner = None  # the model whose outputs this one passes on, if any
    _identity = None  # a name for the model and its version, given by the user

    def __init__(
        self, *, input_shape=None, num_outputs=None, output="logits", likelihood="categorical", sigma=1.0, inner=None
    ):
        if inner is not None:  # passes on inner's outputs: the contract stays on inner alone
            self.inner = inner
            return
        self._set_contract(
            input_shape=input_shape, num_outputs=num_outputs, output=output, likelihood=likelihood, sigma=sigma
        )

    # --- the contract, stored once --------------------------------------------------
    def _owner(self):
        m = self
        while isinstance(m.inner, Model):
            m = m.inner
        return m

    def _set_contract(self, *, input_shape, num_outputs, output, likelihood, sigma):
        if output not in OUTPUTS:
            raise InvalidArgumentError(f"output must be one of {OUTPUTS}, got {output!r}")
        if likelihood not in LIKELIHOODS:
            raise InvalidArgumentError(f"likelihood must be one of {sorted(LIKELIHOODS)}, got {likelihood!r}")
        if not sigma > 0:
            raise InvalidArgumentError(f"sigma must be > 0, got {sigma!r}")
        lik = LIKELIHOODS[likelihood](float(sigma))
        lik.check_output(output)
        self._input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self._num_outputs = None if num_outputs is None else int(num_outputs)
        self._output = output
        self._likelihood = lik

    def contract(self):
        """The contract as a dict of the options that built it.

        >>> import numpy as np
        >>> from fimaudit.testing import LinearModel
        >>> LinearModel(np.eye(2), likelihood="gaussian", sigma=0.5).contract()["sigma"]
        0.5
        """
        o = self._owner()
        lik = o._likelihood
        return dict(
            input_shape=o._input_shape,
            num_outputs=o._num_outputs,
            output=o._output,
            likelihood=lik.name,
            sigma=lik.sigma,
        )

    @property
    def input_shape(self):
        return self._owner()._input_shape

    @property
    def num_outputs(self):
        return self._owner()._num_outputs

    @num_outputs.setter
    def num_outputs(self, value):  # set once the first answer shows C
        self._owner()._num_outputs = None if value is None else int(value)

    @property
    def output(self):
        return self._owner()._output

    @property
    def likelihood(self):
        """The likelihood's name; :func:`fimaudit.get_likelihood` gives the object."""
        return self._owner()._likelihood.name

    @property
    def sigma(self):
        return self._owner()._likelihood.sigma

    @property
    def identity(self):
        """The user's name for this model and its version (``cache_key``), or None. Caches and
        journals key on it: a different identity never reads another model's answers."""
        return self._owner()._identity

    # --- the contract -------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def jvp(self, x, v):
        raise NotImplementedError

    def vjp(self, x, u):
        raise NotImplementedError

    # --- derived ------------------------------------------------------------------
    def jvp_many(self, x, V):
        """``J V`` for V of shape (n, k, *input_shape) → (n, k, C)."""
        xp = namespace(V)
        return xp.stack([self.jvp(x, V[:, i, ...]) for i in range(V.shape[1])], axis=1)

    def vjp_many(self, x, U):
        """``Jᵀ U`` for U of shape (n, k, C) → (n, k, *input_shape)."""
        xp = namespace(U)
        return xp.stack([self.vjp(x, U[:, i, :]) for i in range(U.shape[1])], axis=1)

    def linearize(self, x):
        """Products of this model at a fixed batch x (see :class:`Linearization`)."""
        return Linearization(self, x)

    def with_options(self, **options):
        """A copy with some contract options replaced (likelihood, sigma...). The change is made
        where the contract is stored: every model between this one and the model that produces
        the outputs is copied, so the original is untouched and the copy reads the new options
        everywhere (output validation, the map to natural parameters, the metric).

        >>> import numpy as np
        >>> from fimaudit.testing import LinearModel, ScaledInputModel
        >>> m = ScaledInputModel(LinearModel(np.eye(2)), 2.0)
        >>> b = m.with_options(likelihood="gaussian", sigma=0.5)
        >>> (b.likelihood, b.inner.likelihood, b.sigma), (m.likelihood, m.inner.likelihood)
        (('gaussian', 'gaussian', 0.5), ('categorical', 'categorical'))
        """
        bad = set(options) - set(CONTRACT)
        if bad:
            raise InvalidArgumentError(
                f"unknown option(s) {sorted(bad)} for an already wrapped model; allowed: {sorted(CONTRACT)}"
            )
        new = copy.copy(self)
        if isinstance(self.inner, Model):
            new.inner = self.inner.with_options(**options)
        else:
            new._set_contract(**{**self.contract(), **options})
        return new

    def __repr__(self):
        return (
            f"{type(self).__name__}(input_shape={self.input_shape}, num_outputs={self.num_outputs}, "
            f"output={self.output!r}, likelihood={self.likelihood!r})"
        )


class Linearization:
    """A model at a fixed batch x: ``logits`` plus products with J(x) and J(x)ᵀ.

    The default calls the model each time; adapters may return a subclass that keeps
    the forward pass (e.g. a saved autograd graph) across products.
    """

    def __init__(self, model: Model, x, logits=None):
        self.model = model
        self.x = x
        self.logits = model.forward(x) if logits is None else logits

    def jvp(self, v):
        return self.model.jvp(self.x, v)

    def vjp(self, u):
        return self.model.vjp(self.x, u)

    def jvp_many(self, V):
        return self.model.jvp_many(self.x, V)

    def vjp_many(self, U):
        return self.model.vjp_many(self.x, U)
