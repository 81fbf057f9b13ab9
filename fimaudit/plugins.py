"""Plugin discovery and ``wrap()``: the one place a framework object becomes a :class:`Model`.

Plugins register under the entry-point group ``fimaudit.adapters`` an object with
``claims(obj) -> bool`` and ``wrap(obj, **options) -> Model``; ``claims`` must not import a
framework. ``wrap`` asks each installed plugin in turn; an object of a known framework whose
plugin is missing raises :class:`~fimaudit.errors.MissingAdapterError` naming the extra to
install; any other callable becomes a black box (:mod:`fimaudit.blackbox`).
"""

from __future__ import annotations

import warnings
from importlib import metadata

from .errors import BlackBoxFallbackWarning, MissingAdapterError, UnsupportedModelError
from .models import Model

__all__ = ["wrap", "installed_adapters", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "fimaudit.adapters"


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

    >>> import numpy as np, fimaudit as fa
    >>> from fimaudit.testing import LinearModel
    >>> m = LinearModel(np.eye(2))
    >>> fa.wrap(m) is m, type(fa.wrap(m.forward, input_shape=(2,), output="logits")).__name__
    (True, 'FiniteDifferenceModel')
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
