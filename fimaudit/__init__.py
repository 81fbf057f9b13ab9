"""fimaudit: measure how sensitive a model's output distribution is to input perturbations.

The largest eigenvalue of the input-space Fisher information, per input, exactly or
with honest brackets, for any model with a fimaudit adapter. See DESIGN.md §4.
"""

from . import errors
from .fisher import fisher_norm, fisher_spectrum, fisher_trace
from .likelihoods import get_likelihood
from .models import Linearization, Model, installed_adapters, wrap
from .results import FisherNormResult, SpectrumResult, TraceResult

__version__ = "0.1.0"

__all__ = [
    "wrap", "Model", "Linearization", "installed_adapters",
    "fisher_norm", "fisher_trace", "fisher_spectrum",
    "FisherNormResult", "TraceResult", "SpectrumResult",
    "get_likelihood", "errors", "__version__",
]
