"""Progress bars: shown on a terminal and not in a pipe, forced by progress=True/False and the
CLI's flags, counting the inputs and model rows the call really spent, changing no number, and
never broken by a warning (warnings raised under a bar come after it)."""

import io
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit import errors as E
from fimaudit.progress import shown
from fimaudit.testing import LinearModel, MLPModel, save_gemm_onnx

W = np.random.default_rng(3).standard_normal((4, 6))
MODEL = MLPModel.random([6, 8, 4], seed=5, scale=1.5)
X = np.random.default_rng(4).standard_normal((11, 6))


class Stream(io.StringIO):
    """Standard error as a terminal (``tty=True``) or as a pipe."""

    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.fixture()
def stderr(monkeypatch):
    def use(tty):
        s = Stream(tty)
        monkeypatch.setattr(sys, "stderr", s)
        return s

    return use


def black_box():
    return fa.wrap(LinearModel(W).forward, input_shape=(6,), output="logits")


def final(text, desc):
    """(done, total, model rows) of the last line the bar named ``desc`` drew."""
    lines = [ln for ln in re.split(r"[\r\n]", text) if ln.startswith(desc + ":")]
    assert lines, f"no {desc} bar in {text!r}"
    m = re.search(r"(\d+)/(\d+) \[.*?(\d+) model rows\]", lines[-1])
    assert m, lines[-1]
    return tuple(int(g) for g in m.groups())


CALLS = {
    "fisher_norm": lambda m, p: fa.fisher_norm(m, X, batch_size=4, progress=p),
    "fisher_trace": lambda m, p: fa.fisher_trace(m, X, batch_size=4, progress=p),
    "fisher_spectrum": lambda m, p: fa.fisher_spectrum(m, X, k=2, method="exact", batch_size=4, progress=p),
}


@pytest.mark.parametrize("desc", sorted(CALLS))
@pytest.mark.parametrize("make", [lambda: MODEL, black_box], ids=["white-box", "black-box"])
def test_a_terminal_gets_a_bar_that_counts_the_inputs_and_the_rows_sent(stderr, desc, make):
    s = stderr(True)
    r = CALLS[desc](make(), None)
    done, total, rows = final(s.getvalue(), desc)
    assert done == total == len(X)
    assert rows == int(np.sum(r.queries)) > len(X)  # every row the ledgers charged, forward passes included


@pytest.mark.parametrize("desc", sorted(CALLS))
def test_a_pipe_gets_no_bar_and_false_silences_a_terminal(stderr, desc):
    s = stderr(False)
    CALLS[desc](black_box(), None)
    assert s.getvalue() == ""
    s = stderr(True)
    CALLS[desc](black_box(), False)
    assert s.getvalue() == ""
    s = stderr(False)
    CALLS[desc](MODEL, True)  # forced on, into a pipe
    assert final(s.getvalue(), desc)[:2] == (len(X), len(X))


def test_the_bar_moves_within_a_batch_at_each_model_call_round(stderr, monkeypatch):
    """One black-box batch: the rows counter is redrawn as the rounds go, before the batch is done."""
    import tqdm

    seen = []
    update = tqdm.tqdm.update

    def spy(self, n=1):
        seen.append((self.n, self.postfix))
        return update(self, n)

    monkeypatch.setattr(tqdm.tqdm, "update", spy)
    stderr(True)
    r = fa.fisher_norm(black_box(), X)  # one batch of 11
    rows = [int(p.split()[0]) for n, p in seen if n == 0 and p]
    assert len(rows) >= 4 and rows == sorted(rows)  # base point, noise table, step check, columns...
    assert rows[-1] == int(np.sum(r.queries))


def test_an_audit_bar_counts_chunks_and_resumes_from_the_journal(stderr, tmp_path):
    s = stderr(True)
    a = fa.audit(black_box(), X, batch_size=4, journal=tmp_path / "j.sqlite", bound=False)
    done, total, rows = final(s.getvalue(), "audit")
    assert done == total == len(X) and rows == sum(r["queries"] for r in a.rows)
    assert "fisher_norm:" not in s.getvalue()  # the chunks report into the audit's bar
    s = stderr(True)
    fa.audit(black_box(), X, batch_size=4, journal=tmp_path / "j.sqlite", bound=False)
    assert final(s.getvalue(), "audit") == (len(X), len(X), 0)  # resumed: nothing left to send


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 11), black=st.booleans())
def test_the_bar_changes_no_number(seed, batch, black):
    m = black_box() if black else MODEL
    x = np.random.default_rng(seed).standard_normal((11, 6))
    with_bar = fa.fisher_norm(m, x, method="sketch" if black else "lanczos", batch_size=batch, progress=True)
    without = fa.fisher_norm(m, x, method="sketch" if black else "lanczos", batch_size=batch, progress=False)
    for key in ("value", "lower", "upper", "queries"):
        assert np.array_equal(np.asarray(getattr(with_bar, key)), np.asarray(getattr(without, key)))


def test_warnings_raised_under_a_bar_come_after_it_every_one(stderr, monkeypatch):
    s = stderr(True)
    calls = []

    def served(batch):
        calls.append(len(batch))
        warnings.warn("served from a stale replica", UserWarning, stacklevel=1)
        return LinearModel(W).forward(batch)

    monkeypatch.setattr(
        warnings, "showwarning", lambda message, category, *a, **k: s.write(f"\n<{category.__name__}: {message}>\n")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        fa.fisher_norm(fa.wrap(served, input_shape=(6,), output="logits"), X, batch_size=4, progress=True)
    text = s.getvalue()
    bar_end = text.rindex("11/11")
    assert text.count("<UserWarning: served from a stale replica>") == len(calls) > 3
    assert text.index("<UserWarning") > bar_end  # none inside the bar


def test_a_bad_progress_value_names_the_choices():
    with pytest.raises(E.InvalidArgumentError, match="True, False or None"):
        fa.fisher_norm(MODEL, X, progress="yes")
    assert shown(None, Stream(True)) and not shown(None, Stream(False)) and not shown(None, object())


def test_no_bar_imports_no_tqdm():
    code = (
        "import sys, numpy as np, fimaudit as fa; from fimaudit.testing import LinearModel; "
        "fa.fisher_norm(LinearModel(np.eye(3)), np.zeros((2, 3)), progress=False); "
        "fa.audit(LinearModel(np.eye(3)), np.zeros((2, 3)), bound=False); print('tqdm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr


@pytest.fixture()
def onnx_files(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("fimaudit_onnx")
    save_gemm_onnx(W.T, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    return tmp_path


@pytest.mark.parametrize(
    "flags, tty, bar",
    [
        ([], True, True),
        ([], False, False),
        (["--quiet"], True, False),
        (["--no-progress"], True, False),
        (["--progress"], False, True),
        (["--quiet", "--progress"], False, True),
    ],
)
def test_cli_progress_flags(onnx_files, stderr, capsys, flags, tty, bar):
    from fimaudit.cli import main

    d = onnx_files
    s = stderr(tty)
    code = main(["audit", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--out", str(d / "out"), *flags])
    assert code == 0
    assert ("audit:" in s.getvalue()) == bar
    if bar:
        assert final(s.getvalue(), "audit")[:2] == (len(X), len(X))
    assert ("audited" in capsys.readouterr().out) == ("--quiet" not in flags)


def test_an_error_closes_the_bar_and_lets_the_held_warnings_out(stderr, monkeypatch):
    s = stderr(True)
    calls = []

    def failing(batch):
        calls.append(len(batch))
        warnings.warn("slow answer", UserWarning, stacklevel=1)
        if len(calls) > 3:
            raise ConnectionError("service down")
        return LinearModel(W).forward(batch)

    closed = []  # whether the bar had closed when each warning was shown
    monkeypatch.setattr(warnings, "showwarning", lambda *a, **k: closed.append(s.getvalue().endswith("\n")))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with pytest.raises(ConnectionError):
            fa.fisher_norm(fa.wrap(failing, input_shape=(6,), output="logits"), X, progress=True)
    assert closed == [True] * len(calls)
