"""fimaudit: measure how sensitive a model's output distribution is to input perturbations.

The largest eigenvalue of the input-space Fisher information, per input, exactly or
with honest brackets, for any model with a fimaudit adapter.

>>> import numpy as np, fimaudit as fa
>>> from fimaudit.testing import LinearModel
>>> m = LinearModel(np.array([[1.0, 0.0], [0.0, 2.0]]))   # logits z = W x
>>> r = fa.fisher_norm(m, np.zeros((1, 2)))
>>> round(float(r.value[0]), 12)  # p = (½, ½): F = ¼ (w₁ − w₂)(w₁ − w₂)ᵀ, λ_max = ¼ · ‖(1, −2)‖² = 5/4
1.25
"""

import importlib
import sys
import types

from . import errors

__version__ = "0.1.0"

# Public names are loaded on first use (PEP 562), so `import fimaudit` and the CLI's --help
# stay cheap: name → the module that defines it.
_LAZY = {
    "Audit": ".audit",
    "audit": ".audit",
    "Plan": ".fisher",
    "fisher_norm": ".fisher",
    "fisher_spectrum": ".spectrum",
    "fisher_trace": ".fisher",
    "plan": ".pilot",
    "get_likelihood": ".likelihoods",
    "lipschitz_bound": ".bounds",
    "local_bound": ".bounds.local",
    "certified_radius": ".bounds.local",
    "LocalBound": ".bounds.local",
    "Linearization": ".models",
    "Model": ".models",
    "installed_adapters": ".plugins",
    "wrap": ".plugins",
    "FisherNormResult": ".results",
    "SpectrumResult": ".results",
    "TraceResult": ".results",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'fimaudit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``fimaudit.audit`` is the function: importing the subpackage of the same name
    (which sets the attribute on its parent) must not replace it."""

    def __setattr__(self, name, value):
        if name == "audit" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "wrap",
    "Model",
    "Linearization",
    "installed_adapters",
    "fisher_norm",
    "fisher_trace",
    "fisher_spectrum",
    "plan",
    "Plan",
    "FisherNormResult",
    "TraceResult",
    "SpectrumResult",
    "get_likelihood",
    "errors",
    "__version__",
    "audit",
    "Audit",
    "lipschitz_bound",
    "local_bound",
    "certified_radius",
    "LocalBound",
]
