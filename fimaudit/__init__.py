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

from . import errors
from .audit import Audit, audit
from .fisher import Plan, fisher_norm, fisher_spectrum, fisher_trace, plan
from .likelihoods import get_likelihood
from .models import Linearization, Model, installed_adapters, wrap
from .results import FisherNormResult, SpectrumResult, TraceResult

__version__ = "0.1.0"


def lipschitz_bound(model, input_shape=None, likelihood="categorical", sigma=1.0, input_domain=None):
    """Certified Lipschitz and Fisher bounds from a model's ONNX graph (see fimaudit.bounds);
    ``input_domain=(low, high)`` bounds Transformers on that input box."""
    from .bounds import lipschitz_bound as bound

    return bound(model, input_shape=input_shape, likelihood=likelihood, sigma=sigma, input_domain=input_domain)


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
]
