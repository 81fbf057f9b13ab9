"""How an audit's chunks travel to a ``concurrent.futures.Executor`` and come back.

Promises:

- A chunk whose worker died (a ``KilledWorker``, a closed connection, a broken process
  pool) is submitted again, up to ``retries`` times per chunk; the rows of every chunk are
  handed to ``on_rows`` exactly once, so no row is lost or booked twice.
- When a chunk cannot be run (retries spent, or the executor takes no more work), the
  chunks already running (on Dask, every chunk submitted) are still collected and handed
  on before the failure is raised as :class:`~fimaudit.errors.WorkerLostError`, so a
  journal keeps every finished row and a rerun with it resumes from there.
- The data is not sent with every chunk: a Dask ``Client.get_executor()`` (or
  ``client=``) receives it once, through ``client.scatter(..., broadcast=True)``, and each
  task names it; any other executor receives only the chunk's own rows, ``X[lo:hi]``.

``fn(m, X, y, lo, hi, *rest)`` must read only the rows ``lo..hi`` of ``X`` and ``y``
(``X[lo:hi]``, ``y[i]`` for ``lo <= i < hi``); a plain executor passes :class:`Rows`
windows that hold just those rows under their global indices. The warnings a chunk raises
in a worker process are raised again here (:mod:`fimaudit.audit.worker_warnings`).
"""

from __future__ import annotations

import concurrent.futures as cf

from ..errors import WorkerLostError
from .worker_warnings import carrying, reemit

RETRIES = 3  # resubmissions allowed per chunk after its worker was lost


class Rows:
    """The rows ``lo..hi`` of an array, indexed as in the whole array (``w[lo:hi]``,
    ``w[i]``); any other index is refused rather than answered from the wrong rows.

    >>> import numpy as np
    >>> w = Rows(np.arange(10)[4:7], 4)
    >>> w[4:7].tolist(), int(w[5])
    ([4, 5, 6], 5)
    """

    __slots__ = ("rows", "lo")

    def __init__(self, rows, lo):
        self.rows, self.lo = rows, lo

    def __len__(self):
        return self.lo + len(self.rows)

    def __getitem__(self, key):
        hi = self.lo + len(self.rows)
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop = key.start or 0, hi if key.stop is None else key.stop
            if self.lo <= start <= stop <= hi:
                return self.rows[start - self.lo : stop - self.lo]
        if not isinstance(key, slice) and self.lo <= int(key) < hi:
            return self.rows[int(key) - self.lo]
        raise IndexError(f"rows {self.lo}..{hi} only were sent to this worker; {key!r} is outside them")


def _lost_worker_errors():
    """The exceptions that mean the worker, not the chunk, failed (a model's own socket
    errors are not among them: retrying those would send its rows again)."""
    kinds = [cf.BrokenExecutor]
    try:
        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError
    except ImportError:
        pass
    else:
        kinds += [KilledWorker, CommClosedError]
    return tuple(kinds)


class _Shipper:
    """The arguments that carry the data to each chunk: scattered futures for a Dask
    client, else each chunk's own rows; chunks come back as ``concurrent.futures`` futures."""

    def __init__(self, executor, X, y, client=None):
        self.client = client if client is not None else getattr(executor, "_client", None)
        self.executor = executor if client is None else client.get_executor()
        self.X, self.y, self.data = X, y, None
        if self.client is not None:
            self.scatter()

    def scatter(self):
        self.data = self.client.scatter([self.X, self.y], broadcast=True, hash=False)

    def submit(self, fn, m, lo, hi, rest):
        if self.client is None:
            rows = Rows(self.X[lo:hi], lo), None if self.y is None else Rows(self.y[lo:hi], lo)
            return self.executor.submit(fn, m, *rows, lo, hi, *rest)
        if any(f.status != "finished" for f in self.data):  # every worker holding the data was lost
            self.scatter()
        # a fresh key each time, so a retry never reuses the failed task
        return self.executor.submit(fn, m, *self.data, lo, hi, *rest, pure=False)


def run_chunks(executor, fn, m, X, y, chunks, rest, on_rows, *, retries=None, client=None):
    """Run ``fn(m, X, y, lo, hi, *rest)`` for every ``(lo, hi)`` of ``chunks`` on
    ``executor`` (or on ``client``, a Dask client) and pass each chunk's rows to
    ``on_rows`` as it completes, in completion order; ``retries`` (``RETRIES`` when None)
    resubmissions per chunk. A chunk cancelled by anyone but this function (Dask cancels
    the tasks whose data was lost with a worker) counts as lost with its worker."""
    retries = RETRIES if retries is None else retries
    fn = carrying(fn)  # a worker process's warnings come back with its rows
    ship = _Shipper(executor, X, y, client)
    lost = _lost_worker_errors()
    pending = {ship.submit(fn, m, lo, hi, rest): (lo, hi, 0) for lo, hi in chunks}
    failure = None
    try:
        while pending:
            done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                lo, hi, tries = pending.pop(fut)
                try:
                    rows, caught = fut.result()
                except (cf.CancelledError, *lost) as err:
                    if failure is not None:
                        continue  # cancelled here, or lost after the failure that is raised below
                    cause = err
                    if tries < retries:
                        cause = _resubmit(ship, fn, m, lo, hi, rest, pending, tries + 1)
                        if cause is None:
                            continue
                    failure = (lo, hi, tries, cause)  # stop submitting; what is running is still collected
                    if ship.client is None:
                        _cancel(pending)
                    continue
                except BaseException:
                    _cancel(pending)
                    raise
                reemit(caught)
                on_rows(rows)
    except BaseException:
        _cancel(pending)
        raise
    if failure is not None:
        lo, hi, tries, err = failure
        raise WorkerLostError(
            f"inputs {lo}..{hi - 1} could not be audited: the worker running them was lost "
            f"{tries + 1} time(s) ({type(err).__name__}: {err}); every chunk that finished was kept (in the "
            "journal, if one was given): run the same audit again with that journal to resume, or give the "
            "executor more memory or more retries"
        ) from err


def _resubmit(ship, fn, m, lo, hi, rest, pending, tries):
    """Submit the chunk again; None when it was, else why the executor refused it."""
    try:
        pending[ship.submit(fn, m, lo, hi, rest)] = (lo, hi, tries)
    except (RuntimeError, *_lost_worker_errors()) as err:  # a broken pool, a shut-down executor or client
        return err
    return None


def _cancel(pending):
    """Cancel every chunk not yet started (a running one cannot be; a Dask task, never
    marked running, is cancelled wherever it is)."""
    for fut in list(pending):
        fut.cancel()
