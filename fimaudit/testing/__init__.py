"""Test kit: models with known answers, dense references, Hypothesis strategies and
the adapter conformance checks. Importing it does not import Hypothesis; the
strategies load on first use (``fimaudit.testing.strategies``)."""

from .conformance import check_adapter
from .graphs import save_gemm_onnx
from .models import (
    SPECTRA,
    ForwardLinearModel,
    LinearModel,
    MLPModel,
    ScaledInputModel,
    ShiftedModel,
    dense_fisher,
    dense_metric,
    jacobian,
    spectral_jacobian,
)

__all__ = [
    "check_adapter",
    "save_gemm_onnx",
    "ForwardLinearModel",
    "SPECTRA",
    "spectral_jacobian",
    "LinearModel",
    "MLPModel",
    "ScaledInputModel",
    "ShiftedModel",
    "dense_fisher",
    "dense_metric",
    "jacobian",
    "strategies",
]


def __getattr__(name):
    if name == "strategies":
        import importlib

        return importlib.import_module(".strategies", __name__)
    raise AttributeError(name)
