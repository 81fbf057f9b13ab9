"""Watching an audit journal that another process is writing."""

import sqlite3
import time


def journal_rows(path):
    """Rows committed to the journal at ``path`` so far (0 while it cannot be read yet)."""
    try:
        return sqlite3.connect(path).execute("SELECT COUNT(*) FROM rows").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_for_rows(path, count, timeout, proc=None):
    """Poll until ``count`` rows are committed, ``timeout`` seconds pass or ``proc`` exits."""
    n, deadline = 0, time.time() + timeout
    while time.time() < deadline and n < count and (proc is None or proc.poll() is None):
        time.sleep(0.2)
        n = journal_rows(path)
    return n
