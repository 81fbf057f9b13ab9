"""One round of requests: the rows of one batch that the cache could not answer.

A :class:`Round` holds what its requests share — the batch, its cache keys, the answers so
far, the client and the pace — and its stop rule: after the first failure, or the first
send the row cap refuses, no request starts or is retried; requests in flight finish and
their answers are kept. :class:`Pace` spaces request starts (``rate_limit``);
:func:`run_coroutine` runs the round's event loop, also from inside a running one (Jupyter).
A user's own ``httpx.AsyncClient`` keeps connections bound to the event loop that opened them,
so every round on it, from any model, runs on the one :class:`LoopThread` of that client
(:func:`loop_for`), an event loop that lives as long as the client (such a client is for
fimaudit's use only: the caller's own event loop must not use it at the same time).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref

__all__ = ["LoopThread", "Pace", "Round", "loop_for", "run_coroutine"]


class Halted(Exception):
    """Raised inside a request that is not sent because the round has stopped."""


class Round:
    def __init__(self, batch, keys, answers, cache):
        self.batch, self.keys, self.answers, self.cache = batch, keys, answers, cache
        self.client = self.pace = None
        self.failure = None  # the first error of the round
        self.refused = False  # a send was refused by the row cap

    @property
    def stopped(self):
        return self.failure is not None or self.refused

    def admit(self, ledger, n):
        """Charge ``n`` rows to ``ledger`` for one send, or raise :class:`Halted`."""
        if self.stopped:
            raise Halted
        if not ledger.charge(n):
            self.refused = True
            raise Halted

    def deliver(self, idx, rows):
        """Keep the answers to rows ``idx`` (cache first, so a crash after this loses none)."""
        items = [(self.keys[i], list(map(float, r))) for i, r in zip(idx, rows)]
        if self.cache is not None:
            self.cache.put_many(items)
        self.answers.update(items)

    async def guard(self, coro):
        """Await one request; record its error as the round's failure if it is the first."""
        if self.stopped:
            coro.close()
            return
        try:
            await coro
        except Halted:
            pass
        except Exception as err:  # noqa: BLE001 (kept and raised once the round is over)
            if self.failure is None:
                self.failure = err


def run_coroutine(coro):
    """Run a coroutine to completion, also from inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class LoopThread:
    """One event loop on a daemon thread; ``run(coro)`` runs a coroutine there and waits for it
    (an interrupt while waiting cancels it)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fimaudit-http")
        self.thread.start()

    def run(self, coro):
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise


_LOOPS = weakref.WeakKeyDictionary()  # client -> its LoopThread
_LOOPS_LOCK = threading.Lock()


def loop_for(client):
    """The :class:`LoopThread` of ``client``, started on first use and stopped when the client
    is garbage collected."""
    with _LOOPS_LOCK:
        found = _LOOPS.get(client)
        if found is None:
            found = _LOOPS[client] = LoopThread()
            weakref.finalize(client, found.loop.call_soon_threadsafe, found.loop.stop)
        return found


class Pace:
    """At most ``rate`` request starts per second."""

    def __init__(self, rate):
        self.gap = 0.0 if rate is None else 1.0 / rate
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self):
        if not self.gap:
            return
        async with self.lock:
            now = time.monotonic()
            if self.next > now:
                await asyncio.sleep(self.next - now)
            self.next = max(now, self.next) + self.gap
