"""Batched linear algebra on small symmetric PSD operators, one algorithm a module.

Each routine works on a batch of n independent operators given as a batched product
(``(n, C) -> (n, C)`` or ``(n, m, C) -> (n, m, C)``), in any array-API library.
"""

from .dense import top_eigh
from .hutchinson import TraceEstimate, hutchinson
from .hutchpp import hutchpp
from .lanczos import LanczosResult, lanczos
from .power import power_iteration

__all__ = ["lanczos", "LanczosResult", "power_iteration", "hutchinson", "hutchpp", "TraceEstimate", "top_eigh"]
