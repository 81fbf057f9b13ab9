"""A resumable journal of audit rows in SQLite.

Each finished chunk of rows is committed in one transaction as it completes, so a run
killed at any point (kill -9 included) loses at most the chunks in flight, and the same
call started again skips every committed row that has a result (rows that failed with an
error are measured again). The journal records a fingerprint of the run — a SHA-256 of
every data byte, of the labels, the settings and the model's identity
(:func:`fimaudit.audit.identity.model_identity`) — and refuses to mix results from a
different run; an advisory lock (``fcntl.flock`` on ``<journal>.lock``, where the platform
has it) lets one run at a time use a journal, so a second run fails at once instead of
writing beside the first. A journal that is damaged, read-only, locked or from another
run raises :class:`~fimaudit.errors.JournalError` naming the file and the fix. Local certified
radii (:mod:`fimaudit.audit.radius`) are committed one by one too, keyed by the input domain.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat

from ..errors import JournalError

_START_OVER = "delete it (and its -wal/-shm files) to start over, or pass a new journal file"


class Journal:
    def __init__(self, path, fingerprint: dict):
        self.path = str(path)
        self.db = None
        self._lock = _acquire(self.path)
        try:
            self._open(fingerprint)
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _sql(self, doing):
        try:
            yield
        except sqlite3.Error as err:
            raise JournalError(f"cannot {doing} the journal {self.path!r} ({err}): {_START_OVER}") from None

    def _open(self, fingerprint):
        if os.path.exists(self.path) and not os.stat(self.path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise JournalError(
                f"the journal {self.path!r} is read-only: make it writable (chmod u+w) or pass a new journal file"
            )
        with self._sql("open"):
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS rows (idx INTEGER PRIMARY KEY, row TEXT NOT NULL)")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS radii (domain TEXT NOT NULL, idx INTEGER NOT NULL, radius REAL NOT NULL, "
                "PRIMARY KEY (domain, idx))"
            )
            self.db.execute("BEGIN IMMEDIATE")  # fails now, not after the first chunk, if it cannot be written
            self.db.execute("ROLLBACK")
            stored = self.db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        if stored is None:
            with self._sql("write"):
                self.db.execute(
                    "INSERT INTO meta VALUES ('fingerprint', ?)", (json.dumps(fingerprint, sort_keys=True),)
                )
            return
        try:
            old = json.loads(stored[0])
        except ValueError:
            old = None
        if not isinstance(old, dict):
            raise JournalError(f"the journal {self.path!r} has a damaged fingerprint: {_START_OVER}")
        diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if diff:
            raise JournalError(
                f"the journal {self.path!r} belongs to a different run (differs in {', '.join(diff)}); "
                "results are never mixed: use a new journal file, or the original model, data and settings"
            )

    def done(self):
        """The committed rows that have a result, by index (failed rows are left to redo)."""
        with self._sql("read"):
            stored = self.db.execute("SELECT idx, row FROM rows").fetchall()
        out = {}
        for idx, text in stored:
            try:
                row = json.loads(text)
            except (TypeError, ValueError):
                row = None
            if not (isinstance(row, dict) and row.get("index") == idx and isinstance(row.get("status"), str)):
                raise JournalError(
                    f"row {idx} of the journal {self.path!r} is damaged (not an audit row): {_START_OVER}"
                )
            if not row["status"].startswith("error"):
                out[idx] = row
        return out

    def commit(self, rows):
        with self._sql("write"):
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO rows VALUES (?, ?)", [(r["index"], json.dumps(r)) for r in rows]
            )
            self.db.execute("COMMIT")

    def radii(self, domain):
        """The local certified radii committed for inputs audited on ``domain`` (a key), by index."""
        with self._sql("read"):
            stored = self.db.execute("SELECT idx, radius FROM radii WHERE domain = ?", (domain,)).fetchall()
        return {int(i): float(r) for i, r in stored}

    def commit_radius(self, domain, idx, radius):
        with self._sql("write"):
            self.db.execute("INSERT OR REPLACE INTO radii VALUES (?, ?, ?)", (domain, int(idx), float(radius)))

    def close(self):
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None
        if self._lock is not None:
            _release(self._lock)
            self._lock = None


def _acquire(path):
    """Hold ``<path>.lock`` exclusively (non-blocking); None where there is no flock."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: one run at a time is up to the caller
        return None
    lock_path = path + ".lock"
    try:
        f = open(lock_path, "a+")  # noqa: SIM115 -- held open until close()
    except OSError as err:
        raise JournalError(
            f"cannot create the lock file {lock_path!r} for the journal {path!r} ({err.strerror}): "
            "put the journal in a writable folder"
        ) from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise JournalError(
            f"the journal {path!r} is in use by another run (it holds {lock_path!r}): wait for that run to "
            "finish, or pass another journal file"
        ) from None
    return f


def _release(f):
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    f.close()
