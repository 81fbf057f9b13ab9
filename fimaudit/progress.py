"""Progress bars: the one place that decides whether a call shows one.

``progress=None`` (the default of the estimators and of :func:`fimaudit.audit`) shows a bar
when standard error is a terminal and nothing otherwise (a pipe, a file, a CI log);
``True`` and ``False`` force it on or off. The estimators never ask the terminal
themselves: they open a :class:`Tracker` with :func:`tracking` and report to it

* ``advance(n)``: n more inputs finished (the bar's count, per batch or per chunk);
* ``sent(rows)``: rows just charged to a query ledger (:class:`~fimaudit.ledger.QueryLedger`),
  i.e. every model-call round, shown beside the count — a black-box batch whose one call
  makes thousands of finite-difference queries still moves.

A tracker counts whether or not it draws (``inputs``, ``rows``), so what a bar shows is
what the call did. A tracker passed as ``progress=`` to an inner call (an audit's chunk to
:func:`fimaudit.fisher_norm`) makes the inner call report its rows to the outer bar and draw
none of its own. While a bar is drawn, warnings are held and emitted, each as it was raised
and in order, once the bar has closed, so no warning line breaks the bar. tqdm is imported
only when a bar is drawn.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

from .errors import InvalidArgumentError

__all__ = ["Tracker", "shown", "tracking"]


def shown(progress, stream=None):
    """Whether a bar is drawn: ``progress`` True or False as given, None when ``stream``
    (standard error by default) is a terminal."""
    if progress is None:
        stream = sys.stderr if stream is None else stream
        try:
            return bool(stream is not None and stream.isatty())
        except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
            return False
    if isinstance(progress, bool):
        return progress
    raise InvalidArgumentError(
        f"progress must be True, False or None (a bar when standard error is a terminal), got {progress!r}"
    )


class Tracker:
    """Counts of one call's work, drawn as a tqdm bar when ``bar`` is given.

    ``parent``: the tracker of an enclosing call, to which rows are forwarded (a nested
    tracker draws nothing and leaves the count of inputs to its parent)."""

    def __init__(self, desc="", bar=None, parent=None):
        self.desc, self.parent = desc, parent
        self._make, self.bar = bar, None  # bar: a function of the total that opens it
        self.inputs = 0  # inputs finished
        self.rows = 0  # model rows sent (charged)
        self.total = None

    @property
    def drawn(self):
        return self._make is not None

    def start(self, total, initial=0):
        """The number of inputs the call will finish (``initial`` of them already done); opens the bar."""
        self.total, self.inputs = int(total), int(initial)
        if self._make is not None and self.bar is None:
            self.bar = self._make(self.total, self.inputs)

    def advance(self, n):
        self.inputs += int(n)
        if self.bar is not None:
            self.bar.update(int(n))

    def sent(self, rows):
        self.rows += int(rows)
        if self.parent is not None:
            self.parent.sent(rows)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.rows} model rows", refresh=False)
            self.bar.update(0)  # redraws when the bar's interval has passed

    def child(self, desc=""):
        """A tracker for an inner call that reports its rows here."""
        return Tracker(desc, parent=self)

    def close(self):
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.rows} model rows", refresh=False)
            self.bar.close()


def _bar(desc, stream, unit):
    def make(total, initial):
        from tqdm import tqdm

        return tqdm(
            desc=desc,
            total=total,
            initial=initial,
            unit=unit,
            file=stream,
            dynamic_ncols=True,
            mininterval=0.2,
            smoothing=0.1,
        )

    return make


@contextlib.contextmanager
def tracking(progress, desc, unit=" inputs"):
    """A :class:`Tracker` for one call; ``progress`` as :func:`shown` takes it, or an
    enclosing call's tracker (then the new one is its child). Warnings raised while a bar
    is drawn are emitted after it closes."""
    if isinstance(progress, Tracker):
        yield progress.child(desc)
        return
    if not shown(progress):
        yield Tracker(desc)
        return
    tracker = Tracker(desc, bar=_bar(desc, sys.stderr, unit))
    held = []
    try:
        with warnings.catch_warnings(record=True) as held:
            # the caller's filters apply where each warning is raised (catch_warnings keeps them)
            yield tracker
    finally:
        tracker.close()
        for w in held:  # already filtered where raised: shown, not filtered twice
            warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
