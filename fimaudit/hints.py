"""What a warning or an error tells its reader to change, spelled for whoever reads it.

One table, :data:`HINTS`: each option a message may suggest, with its Python spelling (a
keyword of the function named in ``owner``) and its ``fimaudit audit`` flag (None where the
command has none). :func:`say` renders one for the current reader: Python by default, the
command line inside :func:`for_command_line` (which the ``fimaudit`` command enters around
its work), so the same warning reads ``pass kinks='extrapolate'`` in a script and
``pass --kinks extrapolate`` in a shell, and the two cannot drift apart. ``{n}`` in a
spelling is filled with the value :func:`say` is given (a budget, say) or left as a
placeholder (``budget=N``, ``--budget N``).

Input numbers in messages count from the start of the reader's data: an audit estimates
chunk by chunk, and inside :func:`numbered_from` a message about input i of a chunk names
input ``offset + i`` (:func:`first_input`).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

__all__ = ["Hint", "HINTS", "say", "for_command_line", "reader", "numbered_from", "first_input"]


@dataclass(frozen=True)
class Hint:
    owner: str  # where the keyword is: "fisher_norm", "audit" or "FiniteDifferenceModel" (options of fa.wrap)
    param: str  # the keyword
    python: str  # how a Python caller passes it
    cli: str | None  # the flag of `fimaudit audit`, or None where the command has none


HINTS = {
    "budget": Hint("fisher_norm", "budget", "budget={n}", "--budget {n}"),
    "method_sketch": Hint("fisher_norm", "method", "method='sketch'", "--method sketch"),
    "method_lanczos": Hint("fisher_norm", "method", "method='lanczos'", "--method lanczos"),
    "batch_size": Hint("fisher_norm", "batch_size", "batch_size={n}", "--batch-size {n}"),
    "memory_limit": Hint("fisher_norm", "memory_limit", "memory_limit={n}", None),
    "max_steps": Hint("fisher_norm", "max_steps", "max_steps={n}", None),
    "tol": Hint("fisher_norm", "tol", "tol={n}", "--tol {n}"),
    "input_domain": Hint("audit", "input_domain", "input_domain=(low, high)", "--input-domain LOW,HIGH"),
    "kinks_extrapolate": Hint("FiniteDifferenceModel", "kinks", "kinks='extrapolate'", "--kinks extrapolate"),
    "step": Hint("FiniteDifferenceModel", "step", "step={n}", None),
    "richardson": Hint("FiniteDifferenceModel", "scheme", "scheme='richardson'", None),
    "noise": Hint("FiniteDifferenceModel", "noise", "noise={n}", None),
    "widen": Hint("FiniteDifferenceModel", "on_nondeterminism", "on_nondeterminism='widen'", None),
}

_READER = contextvars.ContextVar("fimaudit_hint_reader", default="python")
_OFFSET = contextvars.ContextVar("fimaudit_first_input", default=0)


def reader():
    """Who reads the messages raised now: ``"python"`` or ``"cli"``."""
    return _READER.get()


@contextlib.contextmanager
def for_command_line():
    """Messages raised inside spell their hints as ``fimaudit audit`` flags."""
    token = _READER.set("cli")
    try:
        yield
    finally:
        _READER.reset(token)


def first_input():
    """The number, in the reader's data, of the first input of the current call."""
    return _OFFSET.get()


@contextlib.contextmanager
def numbered_from(offset):
    """Messages raised inside number the inputs from ``offset`` (one chunk of a larger data set)."""
    token = _OFFSET.set(int(offset))
    try:
        yield
    finally:
        _OFFSET.reset(token)


def say(key, n=None):
    """The option ``key`` of :data:`HINTS` as the current reader writes it, e.g.
    ``budget=61`` or ``--budget 61``; an option the command line lacks reads, there, as the
    Python keyword with a note that it has no flag.

    >>> say("budget", 61), say("kinks_extrapolate")
    ('budget=61', "kinks='extrapolate'")
    >>> with for_command_line():
    ...     say("budget", 61), say("step")
    ('--budget 61', 'the Python option step=H (fimaudit audit has no flag for it)')
    """
    h = HINTS[key]
    if reader() == "cli" and h.cli is not None:
        return h.cli.format(n="N" if n is None else n)
    text = h.python.format(n=_placeholder(h.param) if n is None else n)
    return text if reader() == "python" else f"the Python option {text} (fimaudit audit has no flag for it)"


def _placeholder(param):
    return {"step": "H", "noise": "SIGMA", "tol": "TOL"}.get(param, "N")
