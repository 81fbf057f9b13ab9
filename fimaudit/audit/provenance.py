"""Where an audit's numbers came from, recorded when the audit runs.

:func:`recorded` wraps :func:`fimaudit.audit.audit`. Around the call it records every
warning raised in this process (``warnings.catch_warnings(record=True)`` with the
``"always"`` filter, so repeats are counted), and afterwards it

- re-emits each distinct warning once, with the location of its first occurrence, so
  callers and warning filters still see it; warnings are the same when their category and
  their message with numbers and bracketed lists blanked are (one per chunk of inputs,
  say, differing only in the inputs they name); the finite-difference noise warnings of
  all chunks become one, counting and ranking the inputs of every chunk;
- stores them on the audit as ``warnings``: ``[{category, message, count}]``, the message
  of the first occurrence, in order of first occurrence — except the categories Python
  ignores by default (deprecation, import and resource warnings), which concern the code
  rather than the audit and are only re-emitted;
- stores ``provenance``: fimaudit, Python and NumPy versions, the platform, the UTC time
  the audit started (ISO 8601), the model identity and data digest the audit computed
  (:mod:`fimaudit.audit.identity`, read from its settings, not hashed twice) and the
  settings of the call (every argument except the model, the data, the labels and
  ``progress``).

Warnings raised in other processes (a process pool, Dask workers) come back with their
chunk's rows and are raised again here (:mod:`fimaudit.audit.worker_warnings`).
"""

from __future__ import annotations

import datetime
import functools
import inspect
import platform
import re
import warnings

import numpy as np

from ..blackbox.fd_error import noise_warning
from ..errors import NoiseDominatesWarning

__all__ = ["collect_warnings", "recorded"]

_DATA_ARGS = ("model", "X", "y", "progress")
_IDENTITY_KEYS = ("model", "data", "labels")
_ABOUT_CODE = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def _plain(v):
    """A JSON-ready form of a setting: numbers, strings, None and lists of them as they are, else the type's name."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return f"{type(v).__module__}.{type(v).__qualname__}"


_NUMBERS = re.compile(r"\[[^\]]*\]|[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.I)


def warning_kind(category, message):
    """What makes two warnings the same: the category and the message with its numbers and [lists] blanked."""
    return category, _NUMBERS.sub("#", message)


def collect_warnings(records):
    """Distinct warnings of ``records`` (``warnings.WarningMessage``), by :func:`warning_kind`:
    (first record, count), first seen first. Warnings that carry the inputs they concern
    (``notes``: one per chunk, say) are one kind per category, summarised anew over all of them."""
    seen, notes = {}, {}
    for w in records:
        carried = getattr(w.message, "notes", None)
        key = (w.category.__name__, "notes") if carried else warning_kind(w.category.__name__, str(w.message))
        first, n = seen.get(key, (w, 0))
        seen[key] = (first, n + 1)
        notes.setdefault(key, []).extend(carried or [])
    return [(_summarised(first, notes[key]), n) for key, (first, n) in seen.items()]


def _summarised(record, notes):
    """``record`` with the message of all ``notes`` of its kind (the first one's when it has none)."""
    if not notes or not issubclass(record.category, NoiseDominatesWarning):
        return record
    message = noise_warning(notes)
    return warnings.WarningMessage(message, record.category, record.filename, record.lineno, record.file, record.line)


def _settings(signature, args, kwargs):
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return {k: _plain(v) for k, v in bound.arguments.items() if k not in _DATA_ARGS}


def recorded(fn):
    """``fn`` (an audit function returning an :class:`~fimaudit.audit.Audit`) recording provenance and warnings."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        started = datetime.datetime.now(datetime.timezone.utc)
        records = []
        try:
            with warnings.catch_warnings(record=True) as records:
                warnings.simplefilter("always")
                result = fn(*args, **kwargs)
        finally:  # a failed audit still shows what it warned about
            distinct = collect_warnings(records)
            for first, _ in distinct:
                warnings.warn_explicit(first.message, first.category, first.filename, first.lineno)
        from .. import __version__

        result.warnings = [
            dict(category=w.category.__name__, message=str(w.message), count=n)
            for w, n in distinct
            if not issubclass(w.category, _ABOUT_CODE)
        ]
        result.provenance = dict(
            fimaudit=__version__,
            created=started.isoformat(timespec="seconds"),
            python=platform.python_version(),
            numpy=np.__version__,
            platform=f"{platform.system()} {platform.machine()}",
            **{k: result.settings.get(k) for k in _IDENTITY_KEYS},
            settings=_settings(signature, args, kwargs),
        )
        return result

    return run
