"""How long to wait before the next try: ``Retry-After`` (RFC 9110 §10.2.3) or exponential
backoff with jitter.

``Retry-After`` is either delta-seconds (digits; a decimal fraction is accepted too) or an
HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms, §5.6.7), counted from the
answer's own ``Date`` when it has one (so a skewed local clock does not matter), else from
the local clock. A value that is neither is ignored (backoff applies); ``inf`` or a number
too large for a float asks for an unbounded wait.
"""

from __future__ import annotations

import math
import random
import re
import time
from datetime import timezone
from email.utils import parsedate_to_datetime

__all__ = ["backoff_wait", "retry_after"]

_SECONDS = re.compile(r"\d+(\.\d*)?")
_FOREVER = {"inf", "+inf", "infinity", "+infinity"}


def retry_after(value, date=None, now=None):
    """Seconds to wait asked by a ``Retry-After`` header value (``math.inf`` for an
    unbounded ask), or None when there is no usable value. ``date`` is the answer's
    ``Date`` header, ``now`` the local time (seconds since the epoch)."""
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)  # inf for thousands of digits
    if value.lower() in _FOREVER:
        return math.inf
    target = _http_date(value)
    if target is None:
        return None
    reference = _http_date(date) if date is not None else None
    if reference is None:
        reference = time.time() if now is None else now
    return max(0.0, target - reference)


def backoff_wait(attempt, backoff, max_backoff, rng=random):
    """``min(max_backoff, backoff · 2^attempt)``, stretched by up to 10% of jitter."""
    return min(max_backoff, backoff * 2.0 ** min(attempt, 64)) * (1 + 0.1 * rng.random())


def _http_date(text):
    try:
        when = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime carries no zone: HTTP dates are UTC
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()
