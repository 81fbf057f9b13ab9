"""The model contract, plugin discovery and ``wrap()``.

An adapter maps a framework onto three batched products (DESIGN.md §3):

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
from .errors import InvalidArgumentError, MissingAdapterError, UnsupportedModelError
from .likelihoods import LIKELIHOODS

__all__ = ["Model", "Linearization", "wrap", "installed_adapters", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "fimaudit.adapters"
OUTPUTS = ("logits", "probs")


class Model:
    """Base class of every wrapped model. Subclasses implement forward, jvp and vjp.

    ``has_jvp``/``has_vjp`` say which products exist: a black-box model (finite
    differences) has jvp only, and the core then uses the jvp-only estimators.
    """

    has_jvp = True
    has_vjp = True

    def __init__(self, *, input_shape=None, num_outputs=None, output="logits", likelihood="categorical", sigma=1.0):
        if output not in OUTPUTS:
            raise InvalidArgumentError(f"output must be one of {OUTPUTS}, got {output!r}")
        if likelihood not in LIKELIHOODS:
            raise InvalidArgumentError(f"likelihood must be one of {sorted(LIKELIHOODS)}, got {likelihood!r}")
        if not sigma > 0:
            raise InvalidArgumentError(f"sigma must be > 0, got {sigma!r}")
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.num_outputs = None if num_outputs is None else int(num_outputs)
        self.output = output
        self.likelihood = likelihood
        self.sigma = float(sigma)

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
        """A shallow copy with some contract attributes replaced (likelihood, sigma...)."""
        allowed = {"input_shape", "num_outputs", "output", "likelihood", "sigma"}
        bad = set(options) - allowed
        if bad:
            raise InvalidArgumentError(
                f"unknown option(s) {sorted(bad)} for an already wrapped model; allowed: {sorted(allowed)}"
            )
        new = copy.copy(self)
        merged = {k: getattr(self, k) for k in allowed}
        merged.update(options)
        Model.__init__(new, **merged)
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

        return wrap_callable(obj, **options)
    raise UnsupportedModelError(
        f"no installed fimaudit adapter claims an object of type {type(obj).__module__}."
        f"{type(obj).__qualname__} (installed adapters: {installed_adapters() or 'none'}); "
        "subclass fimaudit.Model (forward/jvp/vjp) or install the plugin for its framework"
    )
