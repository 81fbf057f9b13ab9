"""Telling a plain function that runs a framework model apart from a true black box.

``fimaudit.wrap(fn)`` audits a callable by finite differences: model calls per input of the
order of its ``d`` input dimensions, for what autodiff gets in a few products. When ``fn`` is
a torch/TensorFlow/JAX function (its ``__module__``), or a Python function whose globals,
closure cells or defaults hold a framework module or model (``torch.nn.Module``,
``keras.Model``, ``tf.Module``, a ``flax`` module), :func:`framework_user` names what it
found so ``wrap`` can warn (:class:`~fimaudit.errors.BlackBoxFallbackWarning`) that
wrapping the model itself gives autodiff.

The checks are cheap and never import a framework: a class is recognised only through
frameworks already in ``sys.modules`` (a function cannot hold a torch model if torch was
never imported). Only the names the function's code uses are looked at (``co_names`` and
free variables, and those of the code objects nested in it), one level deep: the attributes
of a callable object, the function and arguments of a ``functools.partial``.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types

__all__ = ["FRAMEWORKS", "fallback_message", "framework_user"]

FRAMEWORKS = ("torch", "tensorflow", "keras", "tf_keras", "jax", "jaxlib", "flax")
_MODEL_CLASSES = (("torch", "nn", "Module"), ("keras", "Model"), ("tensorflow", "Module"), ("flax", "linen", "Module"))


PLUGINS = {"torch": "fimaudit-torch", "tensorflow": "fimaudit-tensorflow", "keras": "fimaudit-tensorflow"}


def framework_user(fn):
    """``(framework, what)`` when ``fn`` runs a framework model or function, else None."""
    try:
        for value in _parts(fn):
            found = _framework_of(value)
            if found is not None:
                return found
    except Exception:  # noqa: BLE001 (a heuristic: an odd object never stops wrap())
        return None
    return None


def fallback_message(fn):
    """The warning's text for ``fn``, or None when it shows no framework."""
    found = framework_user(fn)
    if found is None:
        return None
    framework, what = found
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    plugin = PLUGINS.get("keras" if framework == "tf_keras" else framework)
    how = f" (the {plugin} plugin)" if plugin else ""
    return (
        f"{name!s} uses {what}, but as a plain callable it is audited as a black box by finite differences: "
        "calls per input of the order of its d input dimensions, where autodiff needs a few products. "
        f"For autodiff, wrap the {framework} model itself{how}: fimaudit.wrap(model). "
        "If the black box is intended, filter BlackBoxFallbackWarning"
    )


def _root(name):
    root = name.split(".")[0] if isinstance(name, str) else ""
    return root if root in FRAMEWORKS else None


def _framework_of(value):
    if isinstance(value, types.ModuleType):
        root = _root(value.__name__)
        return None if root is None else (root, f"the module {value.__name__}")
    for path in _MODEL_CLASSES:
        cls = sys.modules.get(path[0])
        for attr in path[1:]:
            cls = getattr(cls, attr, None)
        if isinstance(cls, type) and isinstance(value, cls):
            return path[0], f"a {type(value).__module__}.{type(value).__qualname__}"
    if callable(value) and not isinstance(value, type):
        root = _root(getattr(value, "__module__", None))
        if root is not None:
            return root, f"{getattr(value, '__module__', root)}.{getattr(value, '__name__', type(value).__name__)}"
    return None


def _parts(fn):
    """``fn`` and what it uses: the values its code names, bounded to one level."""
    yield fn
    if isinstance(fn, functools.partial):
        yield from _parts_of_function(fn.func)
        yield from (*fn.args, *fn.keywords.values())
        return
    if isinstance(fn, (types.FunctionType, types.MethodType)):
        yield from _parts_of_function(fn)
        return
    call = inspect.getattr_static(type(fn), "__call__", None)
    if isinstance(call, types.FunctionType):  # a callable object: its attributes and its __call__'s names
        yield from list(getattr(fn, "__dict__", {}).values())[:64]
        yield from _parts_of_function(call)


def _parts_of_function(fn):
    if isinstance(fn, types.MethodType):
        yield fn.__self__
        fn = fn.__func__
    if not isinstance(fn, types.FunctionType):
        yield fn
        return
    yield fn
    for cell in fn.__closure__ or ():
        try:
            yield cell.cell_contents
        except ValueError:  # an empty cell
            continue
    yield from fn.__defaults__ or ()
    yield from (fn.__kwdefaults__ or {}).values()
    names, stack = set(), [fn.__code__]
    while stack and len(names) < 1000:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    scope = fn.__globals__
    yield from (scope[n] for n in sorted(names) if n in scope)
