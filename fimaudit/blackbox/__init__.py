"""Black-box models: callables, finite differences, noise estimation, probe subspaces."""

from .callable import CallableModel
from .finite_differences import FD_OPTIONS, FiniteDifferenceModel
from .noise import ecnoise
from .probes import dct_basis, random_orthonormal

__all__ = [
    "CallableModel",
    "FiniteDifferenceModel",
    "ecnoise",
    "dct_basis",
    "random_orthonormal",
    "wrap_callable",
    "black_box",
]


def black_box(factory, obj, **options):
    """``factory(obj, **model_options)`` behind finite differences: the options of
    :class:`FiniteDifferenceModel` are split off, the rest go to the factory. Plugins of
    forward-only models (ONNX, HTTP) and ``fimaudit.wrap`` all build black boxes here."""
    fd = {k: options.pop(k) for k in FD_OPTIONS if k in options}
    return FiniteDifferenceModel(factory(obj, **options), **fd)


def wrap_callable(fn, **options):
    """``fn`` (batch → outputs) as a finite-difference model; see CallableModel and
    FiniteDifferenceModel for the options."""
    return black_box(CallableModel, fn, **options)
