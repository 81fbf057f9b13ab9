"""Dataset audits: :func:`audit`, the :class:`Audit` result, its journal and report."""

from .run import Audit, audit

__all__ = ["Audit", "audit"]
