"""A content-addressed query cache in SQLite for black-box models (callables, HTTP APIs):
every answered row is committed as soon as its batch returns, so a run killed at any point and
started again pays for no query twice. Keys are SHA-256 digests of the model's identity (a name
for the model and its version that the user gives, or a service's endpoint), the row's dtype,
shape and bytes: a different identity never reads another's answers. The cache stores; the
model validates what it reads back (:mod:`fimaudit.blackbox.callable`)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading

import numpy as np


def row_keys(identity, batch):
    """One key per row of ``batch`` (numpy, (m, ...)) under the model's ``identity``.

    >>> import numpy as np
    >>> a, b = row_keys("model-v1", np.zeros((2, 3))), row_keys("model-v2", np.zeros((1, 3)))
    >>> a[0] == a[1], a[0] == b[0], len(a[0])
    (True, False, 64)
    """
    head = f"{identity}|{batch.dtype.str}|{batch.shape[1:]}|".encode()
    return [hashlib.sha256(head + np.ascontiguousarray(row).tobytes()).hexdigest() for row in batch]


class QueryCache:
    """Answers (lists of floats) by key in the SQLite file ``path``. A stored value that is not
    readable JSON is left out of ``get_many`` (so the row is asked again and replaced).

    >>> import os, tempfile
    >>> c = QueryCache(os.path.join(tempfile.mkdtemp(), "answers.sqlite"))
    >>> c.put_many([("a", [0.25, 0.75])]); c.get_many(["a", "b"]), len(c)
    ({'a': [0.25, 0.75]}, 1)
    >>> c.close()
    """

    def __init__(self, path):
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, outputs TEXT NOT NULL)")

    def get_many(self, keys):
        out = {}
        with self._lock:
            for lo in range(0, len(keys), 500):
                chunk = keys[lo : lo + 500]
                q = f"SELECT key, outputs FROM answers WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v in self._db.execute(q, chunk):
                    try:
                        out[k] = json.loads(v)
                    except (TypeError, ValueError):
                        continue
        return out

    def put_many(self, items):
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", [(k, json.dumps(v)) for k, v in items])
            self._db.execute("COMMIT")

    def __len__(self):
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self):
        self._db.close()
