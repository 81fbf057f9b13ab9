"""Dataset audits: :func:`audit`, the :class:`Audit` result, its journal and report."""

from .result import Audit
from .run import audit

__all__ = ["Audit", "audit"]
