"""fa.audit: the per-input table, the journal (kill -9 and resume), executors, the report."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fimaudit as fa
from fimaudit import errors as E
from fimaudit.testing import MLPModel
from tests.browser import CHROMIUM, headless
from tests.journals import journal_rows, wait_for_rows

MODEL = MLPModel.random([6, 12, 4], seed=2, scale=2.0)
X = np.random.default_rng(0).standard_normal((50, 6))
Y = np.random.default_rng(1).integers(0, 4, 50)


def test_rows_match_the_estimators_and_summary_is_consistent():
    a = fa.audit(MODEL, X, Y, batch_size=16, progress=False)
    assert np.allclose(a.lambda_max, fa.fisher_norm(MODEL, X).value, rtol=1e-12)
    assert np.allclose([r["trace"] for r in a.rows], fa.fisher_trace(MODEL, X).value, rtol=1e-12)
    z = MODEL.forward(X)
    assert [r["prediction"] for r in a.rows] == z.argmax(1).tolist()
    s = a.summary
    assert s["completed"] == 50 and s["accuracy"] == np.mean(z.argmax(1) == Y)
    m = s["lambda_max_mean"]
    assert m["low"] <= m["value"] <= m["high"] and np.isclose(m["value"], a.lambda_max.mean())
    assert [t["index"] for t in a.top] == list(np.argsort(-a.lambda_max)[:5])
    for t in a.top:  # the stored direction is the top eigenvector at that input
        F = fa.testing.dense_fisher(MODEL, X[t["index"]][None])[0]
        v = np.array(t["direction"])
        assert np.isclose(v @ F @ v, t["lambda_max"], rtol=1e-9)


def test_thread_executor_equals_local_run():
    local = fa.audit(MODEL, X, batch_size=8, progress=False)
    with ThreadPoolExecutor(2) as ex:
        remote = fa.audit(MODEL, X, batch_size=8, executor=ex, progress=False)
    assert [r["lambda_max"] for r in remote.rows] == [r["lambda_max"] for r in local.rows]


def test_dask_executor_equals_local_run():
    distributed = pytest.importorskip("distributed")
    local = fa.audit(MODEL, X, batch_size=10, progress=False)
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as c,
        distributed.Client(c) as client,
    ):
        remote = fa.audit(MODEL, X, batch_size=10, executor=client.get_executor(), progress=False)
    assert [r["lambda_max"] for r in remote.rows] == [r["lambda_max"] for r in local.rows]


def test_journal_refuses_another_run(tmp_path):
    j = tmp_path / "j.sqlite"
    fa.audit(MODEL, X, batch_size=16, journal=j, progress=False)
    with pytest.raises(E.InvalidArgumentError, match="different run"):
        fa.audit(MODEL, X + 1, batch_size=16, journal=j, progress=False)


SLOW = """
import sys, time, numpy as np, fimaudit as fa
sys.path.insert(0, {root!r})
from tests.test_audit import MODEL, X
class Slow(type(MODEL)):
    def forward(self, x):
        time.sleep(0.15)
        return super().forward(x)
slow = Slow(MODEL.weights, MODEL.biases)
fa.audit(slow, X, batch_size=5, journal={journal!r}, progress=False)
"""


def test_kill_9_and_resume_gives_the_same_table(tmp_path):
    journal = str(tmp_path / "j.sqlite")
    proc = subprocess.Popen([sys.executable, "-c", SLOW.format(root=os.getcwd(), journal=journal)])
    wait_for_rows(journal, 15, timeout=60)
    proc.kill()
    proc.wait()
    committed = journal_rows(journal)
    assert 15 <= committed < 50

    calls = []

    class Counting(type(MODEL)):
        def forward(self, x):
            calls.append(len(x))
            return super().forward(x)

    resumed = fa.audit(Counting(MODEL.weights, MODEL.biases), X, batch_size=5, journal=journal, progress=False)
    fresh = fa.audit(MODEL, X, batch_size=5, progress=False)
    assert [r["lambda_max"] for r in resumed.rows] == [r["lambda_max"] for r in fresh.rows]
    top_calls = 1 if len(resumed.top) else 0
    assert sum(calls) <= 3 * (50 - committed) + 5 * top_calls + 5  # only the missing rows were audited


def test_save_load_round_trip_and_report(tmp_path):
    a = fa.audit(MODEL, X, Y, progress=False)
    page = a.save(tmp_path / "out")
    b = fa.Audit.load(tmp_path / "out")
    assert b.rows == a.rows and b.summary == a.summary
    text = open(page).read()
    assert text.count("<svg") >= 2 and "http" not in text.replace("http-equiv", "")
    assert (tmp_path / "out" / "results.csv").read_text().count("\n") == 51


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: fa.audit(MODEL, X, Y[:-1], progress=False), "one label per input"),
        (lambda: fa.audit(MODEL, np.where(X > 2.5, np.nan, X), progress=False), "NaN"),
        (lambda: fa.audit(MODEL, X[:, :5], progress=False), "expects"),
        (lambda: fa.audit(MODEL, X[:0], progress=False), "empty"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(E.InvalidArgumentError, match=match):
        call()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(E.InvalidArgumentError, match="cannot write the report"):
        fa.audit(MODEL, X[:5], progress=False).save(blocker / "x")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_chromium(tmp_path):
    page = fa.audit(MODEL, X, Y, progress=False).save(tmp_path / "out")
    shot = tmp_path / "shot.png"
    proc = headless(
        tmp_path, page, f"--screenshot={shot}", "--window-size=1100,1400", "--enable-logging=stderr", "--v=0"
    )
    assert shot.exists() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr and "CONSOLE" not in proc.stderr.upper().replace("CONSOLE_", "")


def test_graph_bound_and_certified_radius_when_a_graph_exists():
    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    pytest.importorskip("onnx")
    from fimaudit_torch.testing import small_cnn

    torch.manual_seed(0)
    net = small_cnn().eval()
    x = np.random.default_rng(0).random((6, 3, 16, 16)).astype(np.float32)
    a = fa.audit(fa.wrap(net, input_shape=(3, 16, 16)), x, progress=False)
    b = fa.lipschitz_bound(fa.wrap(net, input_shape=(3, 16, 16)))
    assert a.summary["bound"]["lipschitz"] == pytest.approx(b.lipschitz)
    assert all(r["lambda_max"] <= a.summary["bound"]["fisher_bound"] for r in a.rows)
    assert all(r["certified_radius"] == pytest.approx(r["margin"] / (np.sqrt(2) * b.lipschitz)) for r in a.rows)
    assert fa.audit(MODEL, X[:4], progress=False).summary["bound"]["available"] is False


def test_a_torch_module_gets_its_bound_with_the_input_shape_of_the_data():
    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    a = fa.audit(net, x, progress=False)  # no input_shape given: the data says (4,)
    b = a.summary["bound"]
    assert b["available"], b
    assert b["lipschitz"] == pytest.approx(fa.lipschitz_bound(fa.wrap(net, input_shape=(4,))).lipschitz)
    assert all(r["certified_radius"] == pytest.approx(r["margin"] / (np.sqrt(2) * b["lipschitz"])) for r in a.rows)


def test_an_onnx_model_ending_in_softmax_gets_the_bound_of_its_logits(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_onnx")
    torch.manual_seed(0)
    logits = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()
    path = str(tmp_path / "probs.onnx")
    torch.onnx.export(
        torch.nn.Sequential(logits, torch.nn.Softmax(dim=1)).eval(),
        (torch.zeros(2, 4),),
        path,
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
    )
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    b = fa.audit(path, x, progress=False).summary["bound"]
    direct = fa.lipschitz_bound(path)
    assert b["available"] and b["softmax_skipped"] and direct.softmax_skipped, b
    assert b["lipschitz"] == pytest.approx(direct.lipschitz)
    W1, W2 = (logits[i].weight.detach().double().numpy() for i in (0, 2))
    assert direct.lipschitz == pytest.approx(np.linalg.norm(W2, 2) * np.linalg.norm(W1, 2), rel=1e-5)  # tanh' ≤ 1


def layer_norm_mlp(torch):
    """An 8 → 16 → 3 MLP (and its wrapped model) with a LayerNorm (no global Lipschitz constant on all of R^8)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.GELU(), torch.nn.Linear(16, 3)
    ).eval()
    return net, fa.wrap(net, input_shape=(8,))


def test_layer_norm_models_get_a_bound_on_their_input_domain():
    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    pytest.importorskip("onnx")
    _, m = layer_norm_mlp(torch)
    x = np.random.default_rng(0).random((5, 8)).astype(np.float32)
    without = fa.audit(m, x, progress=False).summary["bound"]
    assert without["available"] is False and "input_domain" in without["reason"]
    a = fa.audit(m, x, progress=False, input_domain=(0.0, 1.0))
    L = fa.lipschitz_bound(m, input_domain=(0.0, 1.0)).lipschitz
    assert a.summary["bound"]["available"] and a.summary["bound"]["lipschitz"] == pytest.approx(L)
    assert all(r["lambda_max"] <= 0.5 * L**2 for r in a.rows)


def test_ctrl_c_leaves_a_consistent_journal(tmp_path):
    import signal
    import sqlite3

    journal = str(tmp_path / "j.sqlite")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW.format(root=os.getcwd(), journal=journal)], stderr=subprocess.PIPE, text=True
    )
    wait_for_rows(journal, 10, timeout=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    db = sqlite3.connect(journal)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = [json.loads(r) for (r,) in db.execute("SELECT row FROM rows")]
    assert rows and all(r["status"] == "ok" for r in rows)  # only whole, finished rows
    resumed = fa.audit(MODEL, X, batch_size=5, journal=journal, progress=False)
    fresh = fa.audit(MODEL, X, batch_size=5, progress=False)
    assert [r["lambda_max"] for r in resumed.rows] == [r["lambda_max"] for r in fresh.rows]
