"""Black-box models: callables, finite differences, noise estimation, probe subspaces."""

from .callable import CallableModel
from .finite_differences import FD_OPTIONS, FiniteDifferenceModel
from .noise import ecnoise
from .probes import dct_basis, random_orthonormal

__all__ = ["CallableModel", "FiniteDifferenceModel", "ecnoise", "dct_basis", "random_orthonormal", "wrap_callable"]



def wrap_callable(fn, **options):
    """``fn`` (batch → outputs) as a finite-difference model; see CallableModel and
    FiniteDifferenceModel for the options."""
    fd = {k: options.pop(k) for k in FD_OPTIONS if k in options}
    return FiniteDifferenceModel(CallableModel(fn, **options), **fd)
