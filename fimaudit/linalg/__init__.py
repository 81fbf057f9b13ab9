"""Batched linear algebra on small symmetric PSD operators, one algorithm a module.

Each routine works on a batch of n independent operators given as a batched product
(``(n, C) -> (n, C)`` or ``(n, m, C) -> (n, m, C)``), in any array-API library.
"""

from .lanczos import lanczos, LanczosResult
from .power import power_iteration
from .hutchinson import hutchinson, TraceEstimate
from .hutchpp import hutchpp
from .dense import top_eigh

__all__ = ["lanczos", "LanczosResult", "power_iteration", "hutchinson", "hutchpp", "TraceEstimate", "top_eigh"]
