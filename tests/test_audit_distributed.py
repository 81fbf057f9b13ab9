"""fa.audit on executors: what travels with each chunk, and worker processes that die mid-audit.

Rows are counted by the test's own model, which appends the rows of every call to a file of
the process that made it; a worker is killed by the same model, with ``os._exit``, on the
first call after a marker file is created, so only the first attempt dies.
"""

import concurrent.futures as cf
import os
import pickle
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit import errors as E
from fimaudit.audit import executors
from fimaudit.testing import LinearModel

WAIT = 180  # seconds any one audit on the cluster may take before the test fails


class CountingModel(LinearModel):
    """Linear logits; every call appends its row count to ``<folder>/rows-<pid>``; with
    ``kill=`` a marker path, the first call in a process other than the creating one that
    manages to create the marker ends that process."""

    def __init__(self, W, folder, kill=None):
        super().__init__(W)
        self._folder, self._kill, self._home = str(folder), kill, os.getpid()

    def _count(self, x):
        if self._kill is not None and os.getpid() != self._home:
            try:
                os.close(os.open(self._kill, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        with open(os.path.join(self._folder, f"rows-{os.getpid()}"), "a") as f:
            f.write(f"{x.shape[0]}\n")

    def forward(self, x):
        self._count(x)
        return super().forward(x)

    def jvp(self, x, v):
        self._count(x)
        return super().jvp(x, v)

    def vjp(self, x, u):
        self._count(x)
        return super().vjp(x, u)


def rows_sent(folder):
    return sum(int(n) for f in Path(folder).glob("rows-*") for n in f.read_text().split())


W = np.random.default_rng(3).standard_normal((4, 40))
X = np.random.default_rng(4).standard_normal((120, 40))
OPTIONS = dict(batch_size=10, progress=False, bound=False)


def reference(tmp_path):
    """The local run's rows and the model rows it sent."""
    folder = tmp_path / "local"
    folder.mkdir()
    a = fa.audit(CountingModel(W, folder), X, **OPTIONS)
    return a, rows_sent(folder)


def values(a):
    return [(r["index"], r["lambda_max"], r["trace"]) for r in a.rows]


class RecordingExecutor(cf.Executor):
    """Runs each chunk at once, after recording the pickled size of what was submitted."""

    def __init__(self):
        self.payloads = []

    def submit(self, fn, *args):
        self.payloads.append((args, len(pickle.dumps(args[1:]))))  # what travels besides the model
        fut = cf.Future()
        fut.set_result(fn(*pickle.loads(pickle.dumps(args))))
        return fut


def test_a_plain_executor_receives_only_each_chunks_rows(tmp_path):
    local, _ = reference(tmp_path)
    ex = RecordingExecutor()
    remote = fa.audit(LinearModel(W), X, executor=ex, **OPTIONS)
    assert values(remote) == values(local)
    assert len(ex.payloads) == 12
    for args, size in ex.payloads:
        lo, hi = args[3], args[4]
        assert size <= 2 * X[lo:hi].nbytes + 2048, (lo, hi, size)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 20), st.integers(0, 10), st.integers(-5, 40), st.integers(-5, 40))
def test_a_window_answers_its_rows_as_the_whole_array_and_refuses_the_rest(lo, n, a, b):
    whole = np.arange(40.0)[:, None] * np.ones(3)
    w = executors.Rows(whole[lo : lo + n], lo)
    inside = lo <= a < lo + n
    if inside:
        assert np.array_equal(w[a], whole[a])
    else:
        with pytest.raises(IndexError, match="outside"):
            w[a]
    if lo <= a <= b <= lo + n:
        assert np.array_equal(w[a:b], whole[a:b])
    else:
        with pytest.raises(IndexError, match="outside"):
            w[a:b]


def test_a_broken_process_pool_keeps_finished_chunks_in_the_journal(tmp_path):
    local, sent = reference(tmp_path)
    folder = tmp_path / "pool"
    folder.mkdir()
    killer = CountingModel(W, folder, kill=str(tmp_path / "killed"))
    journal = tmp_path / "j.sqlite"
    with cf.ProcessPoolExecutor(2) as pool, pytest.raises(E.WorkerLostError, match="journal"):
        fa.audit(killer, X, executor=pool, journal=journal, **OPTIONS)
    resumed = fa.audit(killer, X, journal=journal, **OPTIONS)
    assert values(resumed) == values(local)
    with sqlite3.connect(journal) as db:
        assert sorted(i for (i,) in db.execute("SELECT idx FROM rows")) == list(range(len(X)))


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    import dask

    # the scheduler itself gives up on a task at the first death of its worker: retrying is left to fa.audit
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, memory_limit="1GiB"
        ) as cluster,
        distributed.Client(cluster, timeout=60) as c,
    ):
        c.wait_for_workers(2, timeout=60)
        yield c


def bounded(fn, *args, **kwargs):
    with cf.ThreadPoolExecutor(1) as t:
        return t.submit(fn, *args, **kwargs).result(timeout=WAIT)


def test_dask_receives_the_data_once(client, tmp_path, monkeypatch):
    local, _ = reference(tmp_path)
    scattered, submitted = [], []
    scatter, submit = client.scatter, client.submit

    def record_scatter(data, **kw):
        scattered.append(kw)
        return scatter(data, **kw)

    def record_submit(fn, *args, **kw):
        submitted.append(args)
        return submit(fn, *args, **kw)

    monkeypatch.setattr(client, "scatter", record_scatter)
    monkeypatch.setattr(client, "submit", record_submit)
    remote = bounded(fa.audit, LinearModel(W), X, executor=client.get_executor(), **OPTIONS)
    assert values(remote) == values(local)
    assert len(scattered) == 1 and scattered[0]["broadcast"] is True
    assert len(submitted) == 12
    from distributed import Future

    assert all(isinstance(a[1], Future) and a[1] is submitted[0][1] for a in submitted)


def test_a_killed_dask_worker_costs_nothing(client, tmp_path):
    local, sent = reference(tmp_path)
    folder = tmp_path / "dask"
    folder.mkdir()
    marker = tmp_path / "killed"
    killer = CountingModel(W, folder, kill=str(marker))
    remote = bounded(fa.audit, killer, X, executor=client.get_executor(), **OPTIONS)
    assert marker.exists()  # a worker did die
    assert values(remote) == values(local)  # every index once, with the local numbers
    assert rows_sent(folder) == sent  # the killed attempt sent nothing; no chunk was paid twice


def test_a_dask_audit_whose_retries_are_spent_resumes_from_its_journal(client, tmp_path, monkeypatch):
    local, sent = reference(tmp_path)
    folder = tmp_path / "dask"
    folder.mkdir()
    killer = CountingModel(W, folder, kill=str(tmp_path / "killed"))
    journal = tmp_path / "j.sqlite"
    monkeypatch.setattr(executors, "RETRIES", 0)
    with pytest.raises(E.WorkerLostError, match="resume"):
        bounded(fa.audit, killer, X, executor=client.get_executor(), journal=journal, **OPTIONS)
    with sqlite3.connect(journal) as db:
        kept = sorted(i for (i,) in db.execute("SELECT idx FROM rows"))
    missing = set(range(len(X))) - set(kept)  # the chunks on the worker that died, and any that lost their data
    assert missing and all({*range(i // 10 * 10, i // 10 * 10 + 10)} <= missing for i in missing)
    resumed = bounded(fa.audit, killer, X, executor=client.get_executor(), journal=journal, **OPTIONS)
    assert values(resumed) == values(local)
    with sqlite3.connect(journal) as db:
        assert sorted(i for (i,) in db.execute("SELECT idx FROM rows")) == list(range(len(X)))
    assert rows_sent(folder) == sent  # across both runs, each chunk paid once


class OddRowWarning(UserWarning):
    """A model's own warning category, importable by reference."""


class WarningModel(LinearModel):
    """Warns from its forward with its own category and with one no other process can import."""

    def forward(self, x):
        warnings.warn(f"odd rows {x.shape[0]}", OddRowWarning, stacklevel=1)
        local = type("LocalWarning", (RuntimeWarning,), {})
        warnings.warn("made up here", local, stacklevel=1)
        return super().forward(x)


def _kinds(audit):
    return sorted((w["category"], w["message"]) for w in audit.warnings)


def test_warnings_raised_in_worker_processes_reach_the_caller_and_the_record():
    model = WarningModel(W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = fa.audit(model, X, **OPTIONS)
    with cf.ProcessPoolExecutor(2) as pool, pytest.warns(OddRowWarning, match="odd rows"):
        remote = fa.audit(model, X, executor=pool, **OPTIONS)
    assert values(remote) == values(local)
    assert ("OddRowWarning", "odd rows 10") in _kinds(remote)
    assert ("RuntimeWarning", "LocalWarning: made up here") in _kinds(remote)
    assert sum(w["count"] for w in remote.warnings) == sum(w["count"] for w in local.warnings)
