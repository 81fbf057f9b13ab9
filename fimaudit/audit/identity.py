"""What identifies an audit's inputs: the model and the data, as SHA-256 digests.

:func:`data_digest` hashes every byte of an array (streamed a block of rows at a time)
together with its dtype and shape. :func:`model_identity` names a wrapped model by the
first of these that it offers, walking from the outer wrapper to the inner model:

1. an explicit ``identity`` string attribute (the way to name a model whose code or
   remote service cannot be read);
2. an ONNX graph: the bytes of ``proto.SerializeToString()``;
3. a torch module (``module``): its ``repr`` (the architecture), the compute dtype and
   every ``state_dict()`` tensor's name, dtype, shape and bytes;
4. a TensorFlow/Keras model (``tf_model``): its class, config and every variable's bytes;
5. an HTTP service: its ``url`` (a service that changes its model behind one URL is not
   detected: give it an ``identity``);
6. a callable (``fn``): its qualified name and code, and what it computes with — its
   defaults, closure cells, the globals its code names (functions among them followed
   three calls deep), the object of a bound method, or a callable object's attributes:
   arrays, floats and strings by value, and a torch module or Keras model found there by
   its weights (as in 3 and 4), so retraining the model behind a plain function changes
   its identity;
7. any other model: the arrays, floats and strings among its public attributes and those
   of the models it wraps (``inner``); integers are left out, since adapters count calls
   in them. A model with none of these is named by its class and its outputs on the
   first inputs only.

Every identity also holds the model's contract (input shape, output kind, likelihood,
σ) and the finite-difference options (scheme, step, noise, kinks) of a black box, since
they change the numbers.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types

import numpy as np

__all__ = ["data_digest", "model_identity"]

_FD_OPTIONS = ("scheme", "step", "noise", "kinks", "on_nondeterminism")
_CONTRACT = ("input_shape", "output", "likelihood", "sigma")
_NOT_STATE = {*_FD_OPTIONS, *_CONTRACT, "inner", "num_outputs"}


def data_digest(a, rows_per_block=4096):
    """SHA-256 of an array's dtype, shape and every byte, hashed a block of rows at a time."""
    a = np.asarray(a)
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    if a.ndim == 0:
        h.update(np.ascontiguousarray(a).tobytes())
    for lo in range(0, a.shape[0] if a.ndim else 0, rows_per_block):
        h.update(memoryview(np.ascontiguousarray(a[lo : lo + rows_per_block])).cast("B"))
    return h.hexdigest()


def _update_state(h, value, depth=0):
    """Hash the arrays, floats and strings in value (lists, tuples and dicts are walked)."""
    if depth > 4:
        return
    if isinstance(value, np.ndarray):
        h.update(f"array|{value.dtype.str}|{value.shape}|".encode())
        h.update(memoryview(np.ascontiguousarray(value)).cast("B") if value.size else b"")
    elif isinstance(value, (float, complex, str, np.floating)):
        h.update(f"{type(value).__name__}|{value!r}|".encode())
    elif isinstance(value, (list, tuple)):
        for v in value:
            _update_state(h, v, depth + 1)
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            if isinstance(k, str) and k.startswith("_"):
                continue
            h.update(f"key|{k}|".encode())
            _update_state(h, value[k], depth + 1)


def _torch_digest(h, module, dtype):
    import torch  # the module is a torch module, so torch is already imported

    h.update(f"torch|{module!r}|{dtype}|".encode())
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())


def _tf_digest(h, model):
    h.update(f"tf|{type(model).__module__}.{type(model).__qualname__}|".encode())
    config = getattr(model, "get_config", None)
    if config is not None:
        try:
            h.update(json.dumps(config(), sort_keys=True, default=str).encode())
        except Exception:  # noqa: BLE001 -- a config that does not serialise names nothing
            pass
    for v in getattr(model, "variables", ()):
        h.update(f"{getattr(v, 'path', getattr(v, 'name', ''))}|".encode())
        h.update(np.ascontiguousarray(np.asarray(v)).tobytes())


def _is_instance(value, module, name):
    """``isinstance(value, module.name)`` when that framework is already imported (never imports it)."""
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return isinstance(cls, type) and isinstance(value, cls)


def _value_digest(h, value, seen, depth):
    """Hash what a callable computes with: a model by its weights, a function by its code, data by value."""
    if id(value) in seen or isinstance(value, (types.ModuleType, type)):
        return
    seen.add(id(value))
    if _is_instance(value, "torch.nn", "Module"):
        _torch_digest(h, value, None)
    elif _is_instance(value, "keras", "Model") or _is_instance(value, "keras", "Layer"):
        _tf_digest(h, value)
    elif isinstance(value, (types.FunctionType, types.MethodType)):
        if depth < 3:
            _fn_digest(h, value, seen, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value[:64]:
            _value_digest(h, v, seen, depth)
    elif isinstance(value, dict):
        for k in sorted(value, key=str)[:256]:
            if not (isinstance(k, str) and k.startswith("_")):
                h.update(f"key|{k}|".encode())
                _value_digest(h, value[k], seen, depth)
    elif isinstance(value, (np.ndarray, float, complex, str, np.floating)):
        _update_state(h, value)
    elif hasattr(value, "__dict__") and depth < 3:  # any other object: its public attributes
        h.update(f"object|{type(value).__module__}.{type(value).__qualname__}|".encode())
        _value_digest(h, vars(value), seen, depth + 1)


def _fn_digest(h, fn, seen=None, depth=0):
    seen = set() if seen is None else seen
    seen.add(id(fn))
    h.update(f"fn|{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}|".encode())
    owner = getattr(fn, "__self__", None)
    if owner is not None and not isinstance(owner, types.ModuleType):  # a bound method: its object too
        _value_digest(h, owner, seen, depth)
        fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is not None:
        h.update(code.co_code + repr(code.co_consts).encode())
        _update_state(h, list(getattr(fn, "__defaults__", None) or ()))
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                _value_digest(h, cell.cell_contents, seen, depth)
            except ValueError:  # an empty cell
                pass
        scope = getattr(fn, "__globals__", {})
        for name in code.co_names:
            if name in scope:
                h.update(f"global|{name}|".encode())
                _value_digest(h, scope[name], seen, depth)
    elif not isinstance(fn, types.BuiltinFunctionType):
        _value_digest(h, getattr(fn, "__dict__", {}), seen, depth)


def _source(h, layer):
    """Hash the first identity source the layer offers; False when it offers none."""
    explicit = getattr(layer, "identity", None)
    if isinstance(explicit, str) and explicit:
        h.update(f"identity|{explicit}|".encode())
        return True
    proto = getattr(layer, "proto", None)
    if proto is not None and hasattr(proto, "SerializeToString"):
        h.update(b"onnx|" + hashlib.sha256(proto.SerializeToString()).digest())
        return True
    module = getattr(layer, "module", None)
    if module is not None and hasattr(module, "state_dict"):
        _torch_digest(h, module, getattr(layer, "dtype", None))
        return True
    tf_model = getattr(layer, "tf_model", None)
    if tf_model is not None:
        _tf_digest(h, tf_model)
        return True
    url = getattr(layer, "url", None)
    if isinstance(url, str):
        h.update(f"url|{url}|".encode())
        return True
    fn = getattr(layer, "fn", None)
    if callable(fn) and getattr(fn, "__self__", None) is not layer:
        _fn_digest(h, fn)
        return True
    return False


def model_identity(model, probe=None):
    """A SHA-256 hex digest naming the wrapped ``model`` (rule in the module docstring).

    ``probe``: a callable returning a few inputs, used only when the model offers no
    identity source (its outputs on them are then hashed, rounded to 4 decimals).
    """
    h = hashlib.sha256()
    layer, found, seen = model, False, set()
    while layer is not None and id(layer) not in seen:
        seen.add(id(layer))
        h.update(f"contract|{[repr(getattr(layer, k, None)) for k in _CONTRACT]}|".encode())
        if hasattr(layer, "kinks"):  # a finite-difference wrapper
            h.update(f"fd|{[repr(getattr(layer, k, None)) for k in _FD_OPTIONS]}|".encode())
        if _source(h, layer):
            found = True
            break
        attrs = vars(layer) if hasattr(layer, "__dict__") else {}
        state = {k: v for k, v in attrs.items() if not k.startswith("_") and k not in _NOT_STATE}
        before = h.copy().digest()
        _update_state(h, state)
        found = found or h.digest() != before
        layer = getattr(layer, "inner", None)
    if not found:
        h.update(f"class|{type(model).__module__}.{type(model).__qualname__}|".encode())
        if probe is not None:
            from .._array import to_numpy

            out = np.round(to_numpy(model.forward(probe())).astype(np.float64), 4)
            h.update(memoryview(np.ascontiguousarray(out)).cast("B"))
    return h.hexdigest()
