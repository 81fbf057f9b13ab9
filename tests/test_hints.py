"""Hints spelled for their reader: every flag a message suggests is one the command accepts, every
Python keyword one the function takes; the same message names the one in a script and the other
in the shell; an audit's noise warnings add up to one that numbers inputs as in its data."""

import argparse
import inspect
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fimaudit as fa
from fimaudit import errors as E
from fimaudit.blackbox import FiniteDifferenceModel
from fimaudit.cli import _parser, main
from fimaudit.hints import HINTS, for_command_line, numbered_from, say
from fimaudit.testing import MLPModel

OWNERS = {"fisher_norm": fa.fisher_norm, "audit": fa.audit, "FiniteDifferenceModel": FiniteDifferenceModel.__init__}
MLP = MLPModel.random([5, 8, 3], seed=1, scale=1.5)
X = np.random.default_rng(2).standard_normal((12, 5))


def _audit_parser():
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["audit"]


@pytest.mark.parametrize("key", sorted(k for k, h in HINTS.items() if h.cli is not None))
def test_every_cli_hint_is_a_flag_the_command_accepts(key):
    """The flag exists, its value is one of its choices, and the whole hint parses."""
    flags = {s: a for a in _audit_parser()._actions for s in a.option_strings}
    words = HINTS[key].cli.format(n=7).replace("LOW,HIGH", "0,1").split()
    assert words[0] in flags, f"{HINTS[key].cli!r}: the audit command has no {words[0]}"
    action = flags[words[0]]
    if action.choices is not None:
        assert words[1] in action.choices
    args = _parser().parse_args(["audit", "m.onnx", "--data", "x.npy", "--out", "o", *words])
    assert getattr(args, action.dest) not in (None, False)


@pytest.mark.parametrize("key", sorted(HINTS))
def test_every_python_hint_is_a_keyword_the_function_takes(key):
    h = HINTS[key]
    assert h.param in inspect.signature(OWNERS[h.owner]).parameters, f"{h.owner} has no {h.param}="
    spelled = h.python.format(n=7)
    assert spelled.startswith(h.param + "=")
    assert eval(f"dict({spelled})", {"low": 0.0, "high": 1.0}).keys() == {h.param}  # valid Python keyword syntax


@settings(max_examples=20, deadline=None)
@given(key=st.sampled_from(sorted(HINTS)), n=st.integers(1, 10**6))
def test_each_reader_gets_its_own_spelling(key, n):
    h = HINTS[key]
    assert say(key, n) == h.python.format(n=n)
    with for_command_line():
        cli = say(key, n)
    assert cli == h.cli.format(n=n) if h.cli else (h.python.format(n=n) in cli and "no flag" in cli)
    assert say(key, n) == h.python.format(n=n)  # the command line's spelling ends with its block


def test_the_same_budget_error_names_the_keyword_in_python_and_the_flag_in_the_shell(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("fimaudit_onnx")
    from fimaudit.testing import save_gemm_onnx

    bb = fa.wrap(MLP.forward, input_shape=(5,), output="logits")
    with pytest.raises(E.InvalidArgumentError) as py:
        fa.fisher_norm(bb, X, budget=4)
    need = int(re.search(r"budget >= (\d+)", str(py.value)).group(1))
    assert f"pass budget={need}" in str(py.value) and "--budget" not in str(py.value)
    save_gemm_onnx(np.ones((5, 3)), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    argv = ["audit", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--budget", "4", "--quiet"]) == 4  # every input failed, each saying why
    rows = __import__("json").loads((tmp_path / "o" / "results.json").read_text())["rows"]
    said = rows[0]["status"]
    least = int(re.search(r"budget >= (\d+)", said).group(1))
    assert f"pass --budget {least}" in said and "pass budget=" not in said


def rounded(b):
    """Probabilities rounded to 3 decimals (a vendor's API): quantisation the finite differences see as noise."""
    z = MLP.forward(b)
    e = np.exp(z - z.max(1, keepdims=True))
    return np.round(e / e.sum(1, keepdims=True), 3)


def test_an_audit_sums_its_chunks_noise_warnings_into_one_naming_inputs_as_in_its_data():
    bb = fa.wrap(rounded, input_shape=(5,), prob_tol=1e-2)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        a = fa.audit(bb, X, batch_size=5, progress=False, bound=False, top=0)
    flagged, ratios = [], []
    for lo in range(0, len(X), 5):  # each chunk's own estimate, as the audit made it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = fa.fisher_norm(bb, X[lo : lo + 5], seed=lo, on_nonconvergence="flag")
        bad = np.flatnonzero(r.fd_error > 0.1 * r.value)
        flagged += (bad + lo).tolist()
        ratios += (r.fd_error / r.value)[bad].tolist()
    assert len(flagged) > 5 and max(flagged) >= 10  # every chunk has some, the last too
    worst = [flagged[i] for i in np.argsort(-np.array(ratios), kind="stable")[:10]]
    noise = [w for w in a.warnings if w["category"] == "NoiseDominatesWarning"]
    assert len(noise) == 1 and noise[0]["count"] == 3  # one for the audit, from its 3 chunks
    assert f"for {len(flagged)} inputs (worst first: {worst}," in noise[0]["message"]
    shown = [w for w in seen if issubclass(w.category, E.NoiseDominatesWarning)]
    assert len(shown) == 1 and str(shown[0].message) == noise[0]["message"]


def test_messages_inside_numbered_from_count_from_its_offset():
    bb = fa.wrap(rounded, input_shape=(5,), prob_tol=1e-2)
    with pytest.warns(E.NoiseDominatesWarning) as plain:
        fa.fisher_norm(bb, X[:5])
    with numbered_from(100), pytest.warns(E.NoiseDominatesWarning) as shifted:
        fa.fisher_norm(bb, X[:5])
    inputs = [int(i) for i in re.search(r"worst first: \[([\d, ]+)\]", str(plain[0].message)).group(1).split(",")]
    assert f"worst first: {[i + 100 for i in inputs]}" in str(shifted[0].message)


def test_the_command_prints_each_warning_once_after_the_bar_with_flags(tmp_path, monkeypatch):
    """A graph whose probabilities are rounded to 4 decimals: the command's stderr has the bar,
    then one summary line for the audit's noise, and no Python warning record."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("fimaudit_onnx")
    import io
    import sys

    from onnx import TensorProto, helper, numpy_helper

    class TTY(io.StringIO):
        def isatty(self):
            return True

    W = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    scale = numpy_helper.from_array(np.array(1e4, np.float32), "s")
    g = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W"], ["z"]),
            helper.make_node("Softmax", ["z"], ["p"], axis=1),
            helper.make_node("Mul", ["p", "s"], ["ps"]),
            helper.make_node("Round", ["ps"], ["r"]),
            helper.make_node("Div", ["r", "s"], ["probs"]),
        ],
        "rounded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(W, "W"), scale],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    err = TTY()
    monkeypatch.setattr(sys, "stderr", err)
    argv = ["audit", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "o")]
    code = main([*argv, "--probs", "--batch-size", "5"])
    text = err.getvalue()
    assert code == 0, text
    lines = [ln for ln in text.splitlines() if ln.startswith("fimaudit: warning")]
    assert len(lines) == 1 and "finite-difference error may exceed 10%" in lines[0], text
    assert text.index(lines[0]) > text.rindex("12/12")  # after the bar's last frame
    assert "NoiseDominatesWarning" not in text  # no Python warning record
    assert "scheme='richardson'" in lines[0] and "no flag" in lines[0]  # the keyword, said to be Python's
