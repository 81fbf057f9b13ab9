"""The model contract, plugin discovery and ``wrap()``.

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
import warnings
from importlib import metadata

from ._array import namespace
from .errors import BlackBoxFallbackWarning, InvalidArgumentError, MissingAdapterError, UnsupportedModelError
from .likelihoods import LIKELIHOODS

__all__ = ["Model", "Linearization", "wrap", "installed_adapters", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "fimaudit.adapters"
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

    def __init__(self, *, input_shape=None, num_outputs=None, output="logits", likelihood="categorical", sigma=1.0):
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

    cost_forward = 1  # model calls per input to set up (the forward pass)
    cost_jvp = 1  # model calls per input for one jvp vector
    cost_vjp = 1

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


def _entry_points():
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def installed_adapters():
    """Names of the installed plugins (entry points in ``fimaudit.adapters``)."""
    return sorted(ep.name for ep in _entry_points())


# Framework → the plugin that handles it; used only to name the fix in errors.
_KNOWN = {
    "torch": ("fimaudit-torch", "torch"),  # framework → (plugin distribution, fimaudit extra)
    "keras": ("fimaudit-tensorflow", "tensorflow"),
    "tensorflow": ("fimaudit-tensorflow", "tensorflow"),
    "tf_keras": ("fimaudit-tensorflow", "tensorflow"),
    "onnx": ("fimaudit-onnx", "onnx"),
    "onnxruntime": ("fimaudit-onnx", "onnx"),
}


def _framework_of(obj):
    for cls in type(obj).__mro__:
        root = (cls.__module__ or "").split(".")[0]
        if root in _KNOWN:
            return root
    if isinstance(obj, (str, bytes)) or type(obj).__name__.endswith("Path"):
        if str(obj).lower().endswith(".onnx"):
            return "onnx"
    return None


def wrap(obj, **options) -> Model:
    """Turn a framework model, a plain callable (black box: batch → outputs), or an
    already wrapped model into a :class:`Model`.

    Options are passed to the adapter: ``input_shape``, ``num_outputs``,
    ``output="logits"|"probs"``, ``likelihood="categorical"|"bernoulli"|"gaussian"``,
    ``sigma`` and adapter-specific ones.
    """
    if isinstance(obj, Model):
        if not obj.has_jvp:  # forward-only (a black box): products by finite differences
            from .blackbox import black_box

            return black_box(lambda m, **o: m.with_options(**o) if o else m, obj, **options)
        return obj.with_options(**options) if options else obj
    for ep in _entry_points():
        try:
            plugin = ep.load()
        except Exception as err:  # one broken plugin must not stop the others
            warnings.warn(
                f"fimaudit plugin {ep.name!r} failed to load ({type(err).__name__}: {err}); skipped",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        if plugin.claims(obj):
            return plugin.wrap(obj, **options)
    fw = _framework_of(obj)
    if fw is not None:
        dist, extra = _KNOWN[fw]
        raise MissingAdapterError(
            f"{type(obj).__name__} is a {fw} model but the {dist} plugin is not installed: "
            f'install it with `pip install "fimaudit[{extra}]"`'
        )
    if callable(obj):
        from .blackbox import wrap_callable
        from .blackbox.fallback import fallback_message

        why = fallback_message(obj)  # a function around a torch/TF/JAX model would get autodiff wrapped directly
        if why is not None:
            warnings.warn(why, BlackBoxFallbackWarning, stacklevel=2)
        return wrap_callable(obj, **options)
    raise UnsupportedModelError(
        f"no installed fimaudit adapter claims an object of type {type(obj).__module__}."
        f"{type(obj).__qualname__} (installed adapters: {installed_adapters() or 'none'}); "
        "subclass fimaudit.Model (forward/jvp/vjp) or install the plugin for its framework"
    )
