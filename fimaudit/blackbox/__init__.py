"""Black-box models: callables, finite differences, noise estimation, probe subspaces."""

from .callable import CallableModel
from .finite_differences import FiniteDifferenceModel
from .noise import ecnoise
from .probes import dct_basis, random_orthonormal

__all__ = ["CallableModel", "FiniteDifferenceModel", "ecnoise", "dct_basis", "random_orthonormal", "wrap_callable"]

_FD_OPTIONS = ("scheme", "step", "noise", "on_nondeterminism", "max_rows")


def wrap_callable(fn, **options):
    """``fn`` (batch → outputs) as a finite-difference model; see CallableModel and
    FiniteDifferenceModel for the options."""
    fd = {k: options.pop(k) for k in _FD_OPTIONS if k in options}
    return FiniteDifferenceModel(CallableModel(fn, **options), **fd)
