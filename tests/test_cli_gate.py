"""The fimaudit command fails closed: distinct exit codes, every argument checked before any
work, an incomplete audit never exits 0, Ctrl-C says how to resume, --help is cheap."""

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fimaudit import cli
from fimaudit.cli import ExitCode, main
from fimaudit.testing import save_gemm_onnx

pytest.importorskip("onnx")
pytest.importorskip("fimaudit_onnx")

from tests.journals import wait_for_rows  # noqa: E402


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "fimaudit.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def _gemm(path, W):
    save_gemm_onnx(W, path)
    return str(path)


@pytest.fixture()
def d(tmp_path):
    rng = np.random.default_rng(0)
    _gemm(tmp_path / "m.onnx", rng.standard_normal((4, 3)))
    _gemm(tmp_path / "one.onnx", rng.standard_normal((4, 1)))
    np.save(tmp_path / "x.npy", rng.standard_normal((6, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 3, 6))
    return tmp_path


def test_help_lists_every_exit_code(capsys):
    assert main(["audit", "--help"]) == 0
    text = capsys.readouterr().out
    for code, meaning in cli.MEANING.items():
        assert f"{int(code):>3}  {meaning}" in text
    assert [int(c) for c in ExitCode] == [0, 2, 3, 4, 130]


def _bad_files(d):
    np.save(d / "ints.npy", np.ones((6, 4), np.int64))
    np.save(d / "empty.npy", np.zeros((0, 4), np.float32))
    np.savez(d / "x.npz", x=np.ones((6, 4), np.float32))
    np.save(d / "objects.npy", np.array([{"a": 1}] * 6, dtype=object), allow_pickle=True)
    (d / "pickle.npy").write_bytes(pickle.dumps(np.ones((6, 4))))
    (d / "corrupt.npy").write_bytes((d / "x.npy").read_bytes()[:90])
    np.save(d / "y_float.npy", np.array([0, 1, 7.7, 2, 1, 0]))
    np.save(d / "y_str.npy", np.array(["cat", "dog", "cat", "dog", "cat", "dog"]))
    np.save(d / "y_short.npy", np.array([0, 1, 2]))
    np.save(d / "y_negative.npy", np.array([0, 1, -1, 2, 1, 0]))
    (d / "a_file").write_text("")


USAGE = [
    (["--method", "bogus"], "invalid choice"),
    (["--budget", "0"], "--budget"),
    (["--budget", "three"], "--budget"),
    (["--batch-size", "0"], "--batch-size"),
    (["--fail-above", "nan"], "--fail-above"),
    (["--fail-above", "inf"], "--fail-above"),
    (["--data", "{d}/missing.npy"], "cannot read the data file"),
    (["--data", "{d}/ints.npy"], "int64"),
    (["--data", "{d}/empty.npy"], "at least one input"),
    (["--data", "{d}/x.npz"], ".npz"),
    (["--data", "{d}/objects.npy"], "never unpickles"),
    (["--data", "{d}/pickle.npy"], "not a .npy file"),
    (["--data", "{d}/corrupt.npy"], "damaged or truncated"),
    (["--labels", "{d}/y_float.npy"], "7.7 at row 2"),
    (["--labels", "{d}/y_str.npy"], "integer class indices"),
    (["--labels", "{d}/y_short.npy"], "one per input"),
    (["--labels", "{d}/y_negative.npy"], "negative"),
    (["--out", "{d}/a_file/out"], "output folder"),
    (["--model", "{d}/missing.onnx"], "cannot read the model"),
    (["--journal", "{d}/no/such/folder/j.sqlite"], "does not exist"),
    (["--journal", "{d}"], "is a folder"),
]


@pytest.mark.parametrize("extra,match", USAGE, ids=[" ".join(e) for e, _ in USAGE])
def test_bad_arguments_are_usage_errors_before_any_work(d, extra, match, monkeypatch, capsys):
    _bad_files(d)
    extra = [e.format(d=d) for e in extra]
    model = str(d / "m.onnx")
    if extra[0] == "--model":
        model, extra = extra[1], []
    args = {"--data": str(d / "x.npy"), "--out": str(d / "out"), "--quiet": None}
    for k, v in zip(extra[::2], extra[1::2]):
        args[k] = v
    argv = ["audit", model] + [a for k, v in args.items() for a in ((k,) if v is None else (k, v))]
    loaded = []
    import fimaudit.plugins

    monkeypatch.setattr(fimaudit.plugins, "wrap", lambda *a, **k: loaded.append(a) or pytest.fail("model loaded"))
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not loaded and not (d / "out" / "results.json").exists()


def test_an_audit_where_every_input_failed_is_incomplete(d):
    p = _cli("audit", str(d / "one.onnx"), "--data", str(d / "x.npy"), "--out", str(d / "o"), "--quiet")
    assert p.returncode == ExitCode.INCOMPLETE, p.stderr
    assert "audit incomplete: 6 of 6" in p.stderr and "at least 2 outputs" in p.stderr
    gated = _cli(
        "audit", str(d / "one.onnx"), "--data", str(d / "x.npy"), "--out", str(d / "o"), "--quiet", "--fail-above", "1"
    )
    assert gated.returncode == ExitCode.INCOMPLETE  # nothing measured is not a pass
    tiny = _cli(
        "audit", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--out", str(d / "o2"), "--quiet", "--budget", "1"
    )
    assert tiny.returncode == ExitCode.INCOMPLETE, tiny.stderr  # a budget too small for any method
    assert all(r["status"].startswith("error") for r in json.loads((d / "o2" / "results.json").read_text())["rows"])


def test_the_gate_passes_and_fails_on_the_measured_values(d):
    base = ["audit", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--labels", str(d / "y.npy"), "--quiet"]
    ok = _cli(*base, "--out", str(d / "a"))
    assert ok.returncode == ExitCode.OK, ok.stderr
    lam = [r["lambda_max"] for r in json.loads((d / "a" / "results.json").read_text())["rows"]]
    assert _cli(*base, "--out", str(d / "b"), "--fail-above", str(max(lam) * 1.01)).returncode == ExitCode.OK
    over = _cli(*base, "--out", str(d / "c"), "--fail-above", str(float(np.median(lam))))
    assert over.returncode == ExitCode.GATE_EXCEEDED and f"{sum(v > np.median(lam) for v in lam)} inputs" in over.stderr


def test_whole_number_float_labels_are_used_as_integers(d):
    np.save(d / "yf.npy", np.array([0.0, 1.0, 2.0, 2.0, 1.0, 0.0]))
    p = _cli(
        "audit", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--labels", str(d / "yf.npy"), "--out", str(d / "o")
    )
    assert p.returncode == ExitCode.OK, p.stderr
    assert [r["label"] for r in json.loads((d / "o" / "results.json").read_text())["rows"]] == [0, 1, 2, 2, 1, 0]


ROW = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["ok", "not converged", "error: ServiceError: down"]),
        "lambda_max": st.one_of(st.none(), st.just(float("nan")), st.floats(0, 10, allow_nan=False)),
        "spread": st.one_of(st.none(), st.just(float("inf")), st.floats(0, 5)),  # upper − λ_max
        "tol_met": st.sampled_from([None, True, False]),
    }
)


def _row(i, r):
    v, spread = r["lambda_max"], r.pop("spread")
    return dict(r, index=i, upper=None if v is None or spread is None else v + spread)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(ROW, max_size=8), gate=st.one_of(st.none(), st.floats(0, 10)))
def test_the_verdict_never_passes_an_incomplete_imprecise_or_exceeded_audit(rows, gate):
    """Fails closed: exceeded when any λ_max or the upper end of any measured input's interval
    is above the gate; incomplete when any input has no number, is not ok, or missed its tol."""
    rows = [_row(i, r) for i, r in enumerate(rows)]
    code = cli._verdict(rows, gate)

    def measured(r):
        return r["lambda_max"] is not None and r["lambda_max"] == r["lambda_max"]

    ok = [r for r in rows if r["status"] == "ok" and measured(r)]
    complete = bool(rows) and len(ok) == len(rows) and all(r["tol_met"] is not False for r in rows)
    above = gate is not None and (
        any(r["lambda_max"] > gate for r in rows if measured(r))
        or any(r["upper"] is not None and r["upper"] > gate for r in ok)
    )
    if above:
        assert code == ExitCode.GATE_EXCEEDED
    elif not complete:
        assert code == ExitCode.INCOMPLETE
    else:
        assert code == ExitCode.OK


def test_ctrl_c_in_process_ends_with_one_line_and_130(d, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["fimaudit.audit"], "audit", interrupted)
    base = ["audit", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--out", str(d / "o"), "--quiet"]
    assert main(base) == ExitCode.INTERRUPTED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--journal" in err
    assert main([*base, "--journal", str(d / "j.sqlite")]) == ExitCode.INTERRUPTED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(d / "j.sqlite") in err and "resume" in err


def test_sigint_during_an_audit_exits_130_with_a_resume_hint(d):
    np.save(d / "big.npy", np.random.default_rng(1).standard_normal((3000, 4)).astype(np.float32))
    journal = str(d / "j.sqlite")
    args = ["audit", str(d / "m.onnx"), "--data", str(d / "big.npy"), "--out", str(d / "o"), "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fimaudit.cli", *args, "--batch-size", "1", "--journal", journal],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_rows(journal, 5, timeout=120, proc=proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert "run the same command to resume" in err and journal in err
    db = sqlite3.connect(journal)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert 5 <= db.execute("SELECT COUNT(*) FROM rows").fetchone()[0] < 3000


HEAVY = ("scipy", "torch", "tensorflow", "keras", "onnx", "onnxruntime", "jax", "cupy", "hypothesis", "httpx")


@pytest.mark.parametrize("argv", [["--help"], ["audit", "--help"], ["--version"]])
def test_help_imports_no_heavy_module(argv):
    code = (
        "import sys, json\n"
        "from fimaudit.cli import main\n"
        f"rc = main({argv!r})\n"
        "print(json.dumps([rc, sorted(sys.modules)]), file=sys.stderr)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    rc, modules = json.loads(p.stderr.strip().splitlines()[-1])
    assert rc == 0
    heavy = [m for m in modules if m.split(".")[0] in HEAVY]
    core = [m for m in modules if m.startswith(("fimaudit.fisher", "fimaudit.audit", "fimaudit.models", "fimaudit.b"))]
    assert not heavy and not core, heavy + core
    assert "numpy.linalg" not in modules and "scipy.stats" not in modules


def test_public_names_load_lazily_and_stay_the_same():
    code = (
        "import sys, json\n"
        "import fimaudit as fa\n"
        "before = 'fimaudit.fisher' in sys.modules\n"
        "import fimaudit.audit.report\n"  # the subpackage named like the function must not replace it
        "from fimaudit import *\n"
        "run = sys.modules['fimaudit.audit.run']\n"
        "same = all(getattr(fa, n) is getattr(sys.modules[__name__], n) for n in fa.__all__)\n"
        "missing = sorted(set(fa.__all__) - set(dir(fa)))\n"
        "print(json.dumps([before, fa.audit is run.audit, fa.Audit is run.Audit, missing, same]))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [False, True, True, [], True]
