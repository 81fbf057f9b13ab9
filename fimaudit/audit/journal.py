"""A resumable journal of audit rows in SQLite.

Each finished chunk of rows is committed in one transaction as it completes, so a run
killed at any point (kill -9 included) loses at most the chunks in flight, and the same
call started again skips every committed row. The journal records a fingerprint of the
model, the data and the settings, and refuses to mix results from a different run.
"""

from __future__ import annotations

import json
import sqlite3

from ..errors import InvalidArgumentError


class Journal:
    def __init__(self, path, fingerprint: dict):
        self.path = str(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS rows (idx INTEGER PRIMARY KEY, row TEXT NOT NULL)")
        except sqlite3.Error as err:
            raise InvalidArgumentError(f"cannot open the journal {self.path!r}: {err}") from None
        stored = self.db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        if stored is None:
            self.db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (json.dumps(fingerprint, sort_keys=True),))
        else:
            old = json.loads(stored[0])
            diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            if diff:
                raise InvalidArgumentError(
                    f"the journal {self.path!r} belongs to a different run (differs in {', '.join(diff)}); "
                    "results are never mixed: use a new journal file, or the original model, data and settings"
                )

    def done(self):
        return {idx: json.loads(row) for idx, row in self.db.execute("SELECT idx, row FROM rows")}

    def commit(self, rows):
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?)", [(r["index"], json.dumps(r)) for r in rows])
        self.db.execute("COMMIT")

    def close(self):
        self.db.close()
