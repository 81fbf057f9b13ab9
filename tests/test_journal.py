"""The audit journal: a fingerprint over all the data and the model's identity, one run at a
time, damaged files refused with the file named, failed rows measured again on resume."""

import hashlib
import os
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit.audit.identity import data_digest, model_identity
from fimaudit.audit.journal import Journal
from fimaudit.errors import FimauditError, InvalidModelOutputError, JournalError
from fimaudit.testing import LinearModel, MLPModel

RNG = np.random.default_rng(3)
X = RNG.standard_normal((12, 4))
W = RNG.standard_normal((3, 4))


def _twin_of(W, rows):
    """W + Δ with Δ orthogonal to the given inputs: the same logits on them, not elsewhere."""
    q, _ = np.linalg.qr(rows.T, mode="complete")
    null = q[:, rows.shape[0] :]  # (d, d − k): directions orthogonal to every row
    delta = RNG.standard_normal((W.shape[0], null.shape[1])) @ null.T
    return W + delta


def test_a_model_that_agrees_on_the_first_inputs_does_not_reuse_the_rows(tmp_path):
    j = tmp_path / "j.sqlite"
    a, b = LinearModel(W), LinearModel(_twin_of(W, X[:2]))
    assert np.allclose(a.forward(X[:2]), b.forward(X[:2]), atol=1e-12)  # the first two inputs cannot tell them apart
    assert not np.allclose(a.forward(X), b.forward(X), atol=1e-3)
    fa.audit(a, X, batch_size=4, journal=j, progress=False)
    with pytest.raises(JournalError, match="different run.*model"):
        fa.audit(b, X, batch_size=4, journal=j, progress=False)


def test_any_changed_data_byte_or_label_is_another_run(tmp_path):
    j = tmp_path / "j.sqlite"
    y = np.arange(12) % 3
    fa.audit(LinearModel(W), X, y, batch_size=4, journal=j, progress=False)
    X2 = X.copy()
    X2[-1, -1] = np.nextafter(X2[-1, -1], np.inf)  # the last byte-level change of the last input
    with pytest.raises(JournalError, match="data"):
        fa.audit(LinearModel(W), X2, y, batch_size=4, journal=j, progress=False)
    with pytest.raises(JournalError, match="labels"):
        fa.audit(LinearModel(W), X, (y + 1) % 3, batch_size=4, journal=j, progress=False)
    resumed = fa.audit(LinearModel(W), X, y, batch_size=4, journal=j, progress=False)  # the same run resumes
    assert resumed.summary["completed"] == 12


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 5),
    block=st.integers(1, 10),
    dtype=st.sampled_from(["float32", "float64", "int64"]),
    seed=st.integers(0, 2**16),
)
def test_data_digest_hashes_every_byte_whatever_the_block(rows, cols, block, dtype, seed):
    a = np.random.default_rng(seed).standard_normal((rows, cols)).astype(dtype)
    expected = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode() + a.tobytes()).hexdigest()
    assert data_digest(a, rows_per_block=block) == expected
    assert data_digest(np.asfortranarray(a), rows_per_block=block) == expected  # layout does not matter
    b = a.copy()
    b.flat[seed % b.size] += 1
    assert data_digest(b, rows_per_block=block) != expected


def test_model_identity_sources():
    mlp = MLPModel.random([4, 5, 3], seed=0)
    same = MLPModel([w.copy() for w in mlp.weights], [b.copy() for b in mlp.biases])
    other = MLPModel.random([4, 5, 3], seed=1)
    assert model_identity(mlp) == model_identity(same) != model_identity(other)
    assert model_identity(mlp) != model_identity(mlp.with_options(likelihood="bernoulli"))

    class V1(LinearModel):
        identity = "classifier v1"

    class V2(LinearModel):
        identity = "classifier v2"

    assert model_identity(V1(W)) != model_identity(V2(W))  # an explicit identity wins over equal weights
    assert model_identity(V1(W)) == model_identity(V1(2 * W))  # and is trusted over the weights

    def f(x):
        return np.ones((len(x), 2)) / 2

    def g(x):
        return np.full((len(x), 2), 0.5)

    wf, wg = fa.wrap(f, input_shape=(4,)), fa.wrap(g, input_shape=(4,))
    assert model_identity(wf) == model_identity(fa.wrap(f, input_shape=(4,))) != model_identity(wg)
    assert model_identity(wf) != model_identity(fa.wrap(f, input_shape=(4,), kinks="extrapolate"))


def test_model_identity_of_onnx_and_torch_models(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("fimaudit_onnx")
    from fimaudit.testing import save_gemm_onnx

    def save(weights, name):
        save_gemm_onnx(weights, tmp_path / name)
        return str(tmp_path / name)

    p1, p2 = save(W.T, "a.onnx"), save(_twin_of(W, X[:2]).T, "b.onnx")
    assert model_identity(fa.wrap(p1)) == model_identity(fa.wrap(p1)) != model_identity(fa.wrap(p2))

    torch = pytest.importorskip("torch")
    pytest.importorskip("fimaudit_torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    ident = model_identity(fa.wrap(net, input_shape=(4,)))
    assert ident == model_identity(fa.wrap(net, input_shape=(4,)))
    with torch.no_grad():
        net[0].bias[0] += 1e-6
    assert model_identity(fa.wrap(net, input_shape=(4,))) != ident
    gelu = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GELU()).eval()
    gelu[0].load_state_dict(net[0].state_dict())
    assert model_identity(fa.wrap(gelu, input_shape=(4,))) != model_identity(fa.wrap(net, input_shape=(4,)))


def test_a_second_run_on_a_journal_in_use_fails_at_once(tmp_path):
    j = str(tmp_path / "j.sqlite")
    first = Journal(j, {"n": 1})
    t0 = time.perf_counter()
    with pytest.raises(JournalError, match="in use by another run") as err:
        Journal(j, {"n": 1})
    assert time.perf_counter() - t0 < 2 and j in str(err.value)
    first.close()
    Journal(j, {"n": 1}).close()  # free again once the first run closed it


HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from fimaudit.audit.journal import Journal
j = Journal({journal!r}, {{"n": 1}})
print("holding", flush=True)
time.sleep(30)
"""


def test_a_journal_held_by_another_process_is_refused(tmp_path):
    j = str(tmp_path / "j.sqlite")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(root=os.getcwd(), journal=j)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "holding"
        t0 = time.perf_counter()
        with pytest.raises(JournalError, match="in use"):
            fa.audit(LinearModel(W), X, journal=j, progress=False)
        assert time.perf_counter() - t0 < 5
    finally:
        proc.kill()
        proc.wait(timeout=30)
    Journal(j, {"n": 1}).close()  # the lock went with the process


def _journal_with_rows(tmp_path):
    j = tmp_path / "j.sqlite"
    fa.audit(MLPModel.random([4, 40, 3], seed=0), np.tile(X, (20, 1)), batch_size=8, journal=j, progress=False)
    return j


def _damaged(tmp_path, how):
    j = _journal_with_rows(tmp_path)
    if how == "garbage bytes":
        j.write_bytes(np.random.default_rng(0).bytes(8192))
    elif how == "truncated":
        data = j.read_bytes()
        j.write_bytes(data[: len(data) // 3])
    elif how == "row not JSON":
        db = sqlite3.connect(j)
        db.execute("UPDATE rows SET row = '{not json' WHERE idx = 3")
        db.commit()
        db.close()
    elif how == "row not an audit row":
        db = sqlite3.connect(j)
        db.execute("UPDATE rows SET row = '[1, 2]' WHERE idx = 5")
        db.commit()
        db.close()
    elif how == "fingerprint not JSON":
        db = sqlite3.connect(j)
        db.execute("UPDATE meta SET value = 'garbage' WHERE key = 'fingerprint'")
        db.commit()
        db.close()
    elif how == "read-only":
        os.chmod(j, 0o444)
    return j


@pytest.mark.parametrize(
    "how,match",
    [
        ("garbage bytes", "cannot open"),
        ("truncated", "journal"),
        ("row not JSON", "row 3"),
        ("row not an audit row", "row 5"),
        ("fingerprint not JSON", "damaged fingerprint"),
        ("read-only", "read-only"),
    ],
)
def test_a_damaged_journal_names_the_file_and_the_fix(tmp_path, how, match):
    j = _damaged(tmp_path, how)
    model = MLPModel.random([4, 40, 3], seed=0)
    with pytest.raises(FimauditError, match=match) as err:
        fa.audit(model, np.tile(X, (20, 1)), batch_size=8, journal=j, progress=False)
    assert isinstance(err.value, JournalError) and not isinstance(err.value, sqlite3.Error)
    assert str(j) in str(err.value)
    assert "new journal" in str(err.value) or "writable" in str(err.value)


class Flaky(LinearModel):
    broken = True  # a class attribute: the same model, failing in one run and not the next

    def forward(self, x):
        if Flaky.broken:
            raise InvalidModelOutputError("the service is down")
        return super().forward(x)


def test_failed_rows_are_measured_again_on_resume(tmp_path):
    j = tmp_path / "j.sqlite"
    Flaky.broken = True
    first = fa.audit(Flaky(W), X, batch_size=4, journal=j, progress=False)
    assert first.summary["completed"] == 0 and all(r["status"].startswith("error") for r in first.rows)
    Flaky.broken = False
    again = fa.audit(Flaky(W), X, batch_size=4, journal=j, progress=False)
    assert again.summary["completed"] == 12
    assert np.allclose(again.lambda_max, fa.fisher_norm(LinearModel(W), X).value, rtol=1e-12)


NET = None  # a module-level model that a plain function uses as a global


def _global_net(x):
    return NET(x)


@pytest.mark.filterwarnings("ignore::fimaudit.errors.BlackBoxFallbackWarning")  # a black box on purpose
def test_model_identity_of_a_plain_function_follows_the_model_it_calls():
    torch = pytest.importorskip("torch")

    def make(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1)).double()

    def closure_of(net):
        def f(x):
            return net(torch.as_tensor(x)).detach().numpy()

        return f

    def ident(fn):
        return model_identity(fa.wrap(fn, input_shape=(4,)))

    a, retrained = make(0), make(1)
    assert ident(closure_of(a)) == ident(closure_of(make(0))) != ident(closure_of(retrained))

    global NET
    NET = a
    before = ident(_global_net)
    NET = make(0)
    assert ident(_global_net) == before  # same weights, same identity
    NET = retrained
    assert ident(_global_net) != before  # retrained behind the same global name

    class Service:  # a bound method of an object holding the weights
        def __init__(self, W):
            self.W = W

        def predict(self, x):
            z = np.asarray(x) @ self.W
            return np.exp(z) / np.exp(z).sum(-1, keepdims=True)

    W1 = np.arange(12.0).reshape(4, 3) / 10
    assert ident(Service(W1).predict) == ident(Service(W1.copy()).predict) != ident(Service(W1 + 1).predict)

    def helper(x):  # a function that calls a helper holding the model
        return _global_net(x)

    assert ident(helper) != ident(lambda x: _global_net(x) * 1.0)
    NET = a
    first = ident(helper)
    NET = retrained
    assert ident(helper) != first
