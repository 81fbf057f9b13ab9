"""Warnings raised while a chunk runs in another process come back with its rows.

A warning raised in a worker process (a process pool, a Dask worker) is printed there, if at
all, and never reaches the audit's caller or the audit's record of warnings
(:mod:`fimaudit.audit.provenance`). :func:`carrying` wraps a chunk function so that, when it
runs in a process other than the one that submitted it, it records every warning its call
raises (the ``"always"`` filter, so repeats count) and returns them next to its rows;
:func:`reemit` raises them again in the submitting process, where they are recorded and
shown like the warnings of a chunk run in place. In the submitting process itself (a
thread pool, a Dask cluster of threads) the chunk runs as it is: its warnings are already
raised where the audit sees them, and recording there would race the caller's own
``catch_warnings``.

A worker process that runs several chunks at once on threads records them one at a time
(``catch_warnings`` is process-wide state), so such a worker runs audit chunks serially.
A category that cannot travel by reference (defined in a local scope, say) comes back as
its nearest built-in warning class, its name before the message.
"""

from __future__ import annotations

import builtins
import functools
import os
import pickle
import threading
import warnings

__all__ = ["carrying", "reemit"]

_ONE_AT_A_TIME = threading.Lock()


def carrying(fn):
    """``fn(*args)`` → ``(rows, warnings)``; ``warnings`` is empty where it ran in this process."""
    return functools.partial(_call, os.getpid(), fn)


def _call(submitter, fn, *args, **kwargs):
    if os.getpid() == submitter:
        return fn(*args, **kwargs), []
    with _ONE_AT_A_TIME, warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        rows = fn(*args, **kwargs)
    return rows, [_portable(r.category, str(r.message)) for r in records]


def _portable(category, message):
    """(category, message) that travels back: a category that pickles by reference as it is,
    any other as its nearest built-in base with its own name in the message."""
    try:
        if pickle.loads(pickle.dumps(category)) is category:
            return category, message
    except Exception:  # noqa: BLE001 - whatever pickling a class raises, it cannot travel
        pass
    base = next(c for c in category.__mro__ if getattr(builtins, c.__name__, None) is c)
    return base, f"{category.__name__}: {message}"


def reemit(caught):
    """Raise the warnings a chunk carried back, in order, in this process."""
    for category, message in caught:
        warnings.warn(message, category, stacklevel=2)
