"""The rows an HTTP model may send over its life (``max_rows_sent``).

Every row is charged before the request that carries it is made, a retried or re-split one
as often as it is sent, so the rows that reach the service never exceed the cap; a charge
that would exceed it is refused and that request is not made.
"""

from __future__ import annotations

import threading

__all__ = ["RowLedger"]


class RowLedger:
    """``charge(n)``: True (and ``n`` rows counted in ``sent``) if ``sent + n`` stays within
    ``cap`` (None: no cap), else False and nothing counted."""

    def __init__(self, cap=None):
        self.cap = cap
        self.sent = 0
        self._lock = threading.Lock()

    def charge(self, n):
        with self._lock:
            if self.cap is not None and self.sent + n > self.cap:
                return False
            self.sent += n
            return True

    @property
    def left(self):
        return None if self.cap is None else self.cap - self.sent
